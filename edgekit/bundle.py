"""Bundle folders (`export/<name>/`: models, edgekit.json, val/eval/calib.npz): write, read, check; no torch.

The schema of edgekit.json is `edgekit.bundle_meta`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from edgekit.bundle_meta import (
    CALIB_FILE,
    EVAL_FILE,
    FORMAT,
    META_FILE,
    MODEL_FILE,
    VAL_FILE,
    BundleMeta,
    CalibSet,
    EvalSet,
    Variant,
)
from edgekit.errors import EdgekitError
from edgekit.runs import read_json, write_json


@dataclass(frozen=True)
class BundlePaths:
    root: Path
    meta: Path
    model: Path  # the fp32 model
    eval: Path
    variants: dict[str, Path]


# ------------------------------------------------------------------------------------------------ write


def new_bundle_dir(out_root: Path, name: str, force: bool = False) -> Path:
    """Where a bundle named `name` goes: `out_root/name`, or `name-2`, `name-3`, … when taken.

    With `force`, `out_root/name` itself (`write_bundle` replaces it only once the new one is complete).
    """
    if force:
        return Path(out_root) / name
    for n in range(1, 10_000):
        path = Path(out_root) / (name if n == 1 else f"{name}-{n}")
        if not path.exists():
            return path
    raise EdgekitError(f"{out_root}: too many bundles named '{name}'")


def write_bundle(
    out_root: Path,
    meta: BundleMeta,
    model_bytes: bytes,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    force: bool = False,
    calib_x: np.ndarray | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a complete bundle into a temporary folder next to its place, then move it there.

    A failure at any point leaves no half-written bundle and never touches an existing one.
    """
    meta = meta.model_copy(deep=True)
    fp32 = meta.variants.get("fp32") or Variant(file=MODEL_FILE, bytes=0, dtype="float32")
    meta.variants["fp32"] = fp32.model_copy(update={"file": MODEL_FILE, "bytes": len(model_bytes)})
    meta.eval.file, meta.eval.images = EVAL_FILE, len(eval_y)
    meta.calib = None if calib_x is None else CalibSet(images=len(calib_x))
    meta.val = None if val is None else EvalSet(file=VAL_FILE, images=len(val[1]), split="val")

    def files(tmp: Path) -> None:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        for file, (x, y) in ((EVAL_FILE, (eval_x, eval_y)), *([(VAL_FILE, val)] if val else [])):
            with (tmp / file).open("wb") as f:
                np.savez_compressed(f, x=x.astype(np.float32, copy=False), y=y.astype(np.int64, copy=False))
        if calib_x is not None:
            with (tmp / CALIB_FILE).open("wb") as f:
                np.savez_compressed(f, x=calib_x.astype(np.float32, copy=False))
        write_json(tmp / META_FILE, meta.model_dump(mode="json"))
        read_bundle(tmp, check_model=False)  # what we wrote reads back
        load_eval(tmp)
        if val is not None:
            load_val(tmp)

    return _commit(Path(out_root), meta.name, files, force)


def _commit(out_root: Path, name: str, files: Callable[[Path], None], force: bool) -> Path:
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_root, prefix=f".{name}.", suffix=".tmp"))
    try:
        files(tmp)
        # mkdtemp/mkstemp make owner-only folders and files; a bundle is meant to be copied and shared.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
            with f.open("rb") as handle:  # on disk before the rename: a crash never leaves half a file
                os.fsync(handle.fileno())
        if force:
            return _swap(tmp, out_root / name)
        while True:
            dest = new_bundle_dir(out_root, name)
            try:
                dest.mkdir()  # claim the name: two exports started together get different folders
            except FileExistsError:
                continue
            try:
                os.replace(tmp, dest)  # a folder renamed onto the empty folder just made
            except BaseException:
                dest.rmdir()
                raise
            return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, dest: Path) -> Path:
    """Replace `dest` by `tmp`: the old bundle is set aside first and removed only once the new one is in."""
    if not dest.exists():
        os.replace(tmp, dest)
        return dest
    old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".old"))
    os.replace(dest, old / dest.name)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old / dest.name, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


def write_meta(path: Path, meta: BundleMeta) -> None:
    """Rewrite an existing bundle's edgekit.json atomically (e.g. after adding a variant)."""
    write_json(Path(path) / META_FILE, meta.model_dump(mode="json"))
    (Path(path) / META_FILE).chmod(0o644)  # the temporary file it was renamed from was owner-only


def add_variant(path: Path, name: str, variant: Variant) -> BundleMeta:
    """Record the model file `variant.file` (already written into the bundle) as variant `name`."""
    meta, _ = read_bundle(path, check_model=False)
    file = Path(path) / variant.file
    if not file.is_file():
        raise EdgekitError(f"{file}: no such file to add as variant '{name}'")
    meta.variants[name] = variant.model_copy(update={"bytes": file.stat().st_size})
    write_meta(path, meta)
    return meta


# ------------------------------------------------------------------------------------------------- read


def read_bundle(path: Path, check_model: bool = True) -> tuple[BundleMeta, BundlePaths]:
    """Read and validate `path/edgekit.json` and check the files it names are there.

    `check_model` also parses and checks each variant's ONNX file (imports onnx, not torch), so a
    truncated or corrupt model is reported here rather than by a runtime later.
    """
    root = Path(path)
    if not root.is_dir():
        raise EdgekitError(f"{root}: no such bundle folder (export one with `edgekit export --onnx`)")
    meta_file = root / META_FILE
    if not meta_file.is_file():
        raise EdgekitError(f"{root}: not an edgekit bundle (no {META_FILE} in it)")
    raw = read_json(meta_file, FORMAT, "bundle")
    try:
        meta = BundleMeta.model_validate(raw)
    except ValidationError as e:
        lines = [f"{meta_file}: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        if any(err["loc"][0] == "input" for err in e.errors()):  # predict cannot preprocess without it
            lines[-1] += (
                "; the preprocessing is incomplete: re-export it with `edgekit export --onnx RUN --force`"
            )
        raise EdgekitError("\n".join(lines)) from None
    if "fp32" not in meta.variants:
        raise EdgekitError(f"{meta_file}: variants has no 'fp32' entry")
    variants = {name: root / v.file for name, v in meta.variants.items()}
    calib = [("calib", root / meta.calib.file)] if meta.calib else []
    calib += [("val", root / meta.val.file)] if meta.val else []
    for name, file in [*variants.items(), ("eval", root / meta.eval.file), *calib]:
        if not file.is_file():
            raise EdgekitError(f"{root}: bundle is missing {file.name} (variant '{name}')")
    if check_model:
        for file in variants.values():
            check_onnx_file(file)
    paths = BundlePaths(root, meta_file, variants["fp32"], root / meta.eval.file, variants)
    return meta, paths


def check_onnx_file(path: Path) -> None:
    """Parse and check an ONNX file, or raise an EdgekitError saying it is corrupt."""
    import onnx  # a light dependency (bench has it); imported here so reading metadata needs only numpy

    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # onnx raises DecodeError, ValidationError, … depending on what is wrong
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgekitError(f"{path}: not a valid ONNX model ({first})") from None


def load_eval(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's evaluation set (the test split): `x` float32 (N, C, H, W) preprocessed, `y` int64 (N,).
    Report on it; choose on `load_val`."""
    meta, _ = read_bundle(path, check_model=False)
    return _labelled(path, meta, meta.eval, "eval")


def load_val(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's val split, preprocessed like eval.npz: what anything that chooses scores on."""
    meta, _ = read_bundle(path, check_model=False)
    if meta.val is None:
        raise EdgekitError(
            f"{path}: bundle has no val set (no {VAL_FILE}: its run had none, data.val_fraction: 0, or it "
            "was exported before edgekit stored one), so choices would have to look at the test split; "
            "re-export a run that has a val split with `edgekit export --onnx RUN --force`"
        )
    return _labelled(path, meta, meta.val, "val")


def _labelled(path: Path, meta: BundleMeta, entry: EvalSet, name: str) -> tuple[np.ndarray, np.ndarray]:
    file = Path(path) / entry.file
    try:
        with np.load(file, allow_pickle=False) as data:
            x, y = data["x"], data["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise EdgekitError(f"{file}: not a readable {name} set with arrays x and y ({e})") from None
    chw = tuple(meta.input.shape[1:])
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != chw:
        raise EdgekitError(
            f"{file}: x is {x.dtype} {tuple(x.shape)}, expected float32 (N, {', '.join(map(str, chw))}) "
            f"as {META_FILE} input.shape says"
        )
    if y.dtype != np.int64 or y.shape != (len(x),):
        raise EdgekitError(f"{file}: y is {y.dtype} {tuple(y.shape)}, expected int64 ({len(x)},)")
    if len(y) != entry.images:
        raise EdgekitError(f"{file}: {len(y)} images, but {META_FILE} {name}.images says {entry.images}")
    return x, y


def load_calib(path: Path) -> np.ndarray:
    """The bundle's calibration images: float32 (N, C, H, W) from the training split, preprocessed."""
    meta, _ = read_bundle(path, check_model=False)
    if meta.calib is None:
        raise EdgekitError(
            f"{path}: bundle has no calibration data reachable (no {CALIB_FILE}: it was exported before "
            "edgekit stored one); re-export it with `edgekit export --onnx RUN --force`"
        )
    file = Path(path) / meta.calib.file
    try:
        with np.load(file, allow_pickle=False) as data:
            x = data["x"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise EdgekitError(f"{file}: not a readable calibration set with an array x ({e})") from None
    chw = tuple(meta.input.shape[1:])
    if x.dtype != np.float32 or x.ndim != 4 or tuple(x.shape[1:]) != chw or len(x) != meta.calib.images:
        raise EdgekitError(
            f"{file}: x is {x.dtype} {tuple(x.shape)}, expected float32 ({meta.calib.images}, "
            f"{', '.join(map(str, chw))}) as {META_FILE} says"
        )
    return x
