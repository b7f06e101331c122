"""`edgekit export --onnx`: a run's best.pt → a checked bundle in export/<run name>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgekit.train  # noqa: F401  (binds the train registries the run's recipe is validated against)
from edgekit import __version__
from edgekit.bundle import read_bundle, write_bundle
from edgekit.bundle_meta import (
    MODEL_FILE,
    Accuracy,
    BundleMeta,
    EvalSet,
    InputSpec,
    OutputSpec,
    Parity,
    Source,
    Variant,
    Versions,
)
from edgekit.data import Prepared, prepare_for
from edgekit.data.loader import DeviceLoader
from edgekit.errors import EdgekitError
from edgekit.export import onnx as to
from edgekit.export import parity
from edgekit.models import from_checkpoint
from edgekit.recipe import validate
from edgekit.recipe_schema import Recipe
from edgekit.runs import Run, load_checkpoint, newest_run

EVAL_CAP = 2000  # eval.npz holds the whole test split up to this many images, else a stratified sample
PARITY_CAP = 1000  # validation images the parity check runs on
CALIB_CAP = 300  # training images stored in calib.npz for int8 calibration (a stratified sample)


def export_run(
    run: Path | None,
    out_root: Path = Path("export"),
    runs_dir: Path = Path("runs"),
    opset: int = 18,
    batch: str = "dynamic",
    force: bool = False,
    console=None,
) -> Path:
    """Export `run` (a run folder or a checkpoint in one; default the newest under `runs_dir`) to
    `out_root/<run name>/` (`-2`, `-3`, … when taken, unless `force`). Returns the bundle folder."""
    fixed = to.parse_batch(batch)
    to.check_opset(opset)
    source = Run.open(run) if run is not None else Run(newest_run(runs_dir))
    run_dir = source.folder
    checkpoint = Path(run) if run is not None and Path(run).suffix == ".pt" else source.best
    if not checkpoint.is_file():
        raise EdgekitError(
            f"{run_dir}: no {checkpoint.name} (the run has not saved a best checkpoint yet); "
            f"train it longer or pass a checkpoint file, e.g. {source.last}"
        )
    ckpt = load_checkpoint(checkpoint)
    model = from_checkpoint(ckpt, checkpoint)
    recipe = validate(ckpt["recipe"], f"{checkpoint}: recipe")
    data = _data(recipe, ckpt, checkpoint, console)
    val_x, val_y = _preprocess(data.val, ckpt, PARITY_CAP)
    eval_x, eval_y = _preprocess(data.test, ckpt, EVAL_CAP)
    calib_x, _ = _preprocess(data.train, ckpt, CALIB_CAP)

    chw = (ckpt["in_channels"], ckpt["image_size"], ckpt["image_size"])
    proto = to.to_onnx(model, chw, opset, fixed)
    batchnorms = to.op_count(proto, "BatchNormalization")
    sess = parity.session(proto.SerializeToString())
    # Parity needs images, not held-out ones: a run without a val split is compared on its calibration images.
    match = parity.check_parity(model, sess, val_x if data.has_val else calib_x)
    meta = _meta(run_dir, checkpoint, ckpt, recipe, opset, fixed, match, len(eval_y), len(data.test[1]))
    meta.variants["fp32"].accuracy = parity.accuracy(sess, eval_x, eval_y)
    to.embed_metadata(proto, meta.model_dump(mode="json", exclude={"recipe", "variants", "calib"}))
    bundle = write_bundle(
        out_root,
        meta,
        proto.SerializeToString(),
        eval_x,
        eval_y,
        force,
        calib_x,
        val=(val_x, val_y) if data.has_val else None,
    )
    _report(console, run_dir, bundle, read_bundle(bundle)[0], batchnorms)
    return bundle


def _data(recipe: Recipe, ckpt: dict[str, Any], checkpoint: Path, console) -> Prepared:
    """The run's dataset and split, as the recipe in the checkpoint says; it must fit the model."""
    data = prepare_for(recipe)
    found = {"in_channels": data.in_channels, "image_size": data.image_size, "class_names": data.class_names}
    for key, value in found.items():
        if value != ckpt[key]:
            raise EdgekitError(
                f"{checkpoint}: the run's dataset now gives {key} {value!r}, the model was trained "
                f"for {ckpt[key]!r}; the data changed since training"
            )
    if console is not None and data.fingerprint != ckpt.get("data_fingerprint"):
        console.print(
            f"[yellow]warning:[/] data.{recipe.data.dataset} changed since {checkpoint} was trained; the "
            "validation and test images may differ from the run's"
        )
    return data


def _preprocess(split, ckpt: dict[str, Any], cap: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images → float32 NCHW normalized exactly as in training evaluation; at most `cap` of
    them, a stratified sample when the split is bigger."""
    images, labels = split
    if len(labels) > cap:
        keep = _stratified(labels.numpy(), cap)
        images, labels = images[keep], labels[keep]
    loader = DeviceLoader(images, labels, batch_size=max(1, len(labels)), mean=ckpt["mean"], std=ckpt["std"])
    x, y = loader.batch(loader.images, loader.labels)
    return x.numpy().astype(np.float32), y.numpy().astype(np.int64)


def _stratified(labels: np.ndarray, count: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        _, kept = train_test_split(index, test_size=count, stratify=labels, random_state=0)
    except ValueError:  # a class too small to stratify: a plain random sample
        _, kept = train_test_split(index, test_size=count, random_state=0)
    return np.sort(kept)


def _meta(run_dir, checkpoint, ckpt, recipe, opset, fixed, match, images, split_size) -> BundleMeta:
    import onnx
    import onnxruntime
    import onnxslim

    chw = [ckpt["in_channels"], ckpt["image_size"], ckpt["image_size"]]
    batch = fixed if fixed else "batch"
    return BundleMeta(
        name=run_dir.name,
        class_names=list(ckpt["class_names"]),
        input=InputSpec(
            name=to.INPUT,
            shape=[batch, *chw],
            mean=list(ckpt["mean"]),
            std=list(ckpt["std"]),
            image_size=ckpt["image_size"],
        ),
        output=OutputSpec(name=to.OUTPUT, shape=[batch, ckpt["num_classes"]]),
        params=ckpt["params"],
        macs=ckpt["macs"],
        accuracy=_accuracy(run_dir, checkpoint),
        recipe=recipe.model_dump(mode="json"),
        versions=Versions(
            edgekit=__version__,
            torch=torch.__version__,
            onnx=onnx.__version__,
            onnxruntime=onnxruntime.__version__,
            onnxslim=onnxslim.__version__,
            opset=opset,
        ),
        source=Source(run=str(run_dir), checkpoint=str(checkpoint), epoch=ckpt["epoch"]),
        parity=Parity(**match),
        eval=EvalSet(images=images, sampled=images < split_size),
        variants={"fp32": Variant(file=MODEL_FILE, bytes=0, dtype="float32")},
    )


def _accuracy(run_dir: Path, checkpoint: Path) -> Accuracy:
    """Val and test accuracy from the run's summary.json, which measures best.pt (the default)."""
    run = Run(run_dir)
    if checkpoint.name != run.best.name or not run.summary_file.is_file():
        return Accuracy()
    try:
        found = run.summary()
    except json.JSONDecodeError:
        return Accuracy()
    return Accuracy(val=found.get("val_acc"), test=found.get("test_acc"))


def _report(console, run_dir: Path, bundle: Path, meta: BundleMeta, batchnorms: int) -> None:
    if console is None:
        return
    fp32, p = meta.variants["fp32"], meta.parity
    acc = f"{fp32.accuracy:.2%}" if fp32.accuracy is not None else "n/a"
    batch = "dynamic" if meta.input.shape[0] == "batch" else meta.input.shape[0]
    compared = "val" if meta.val else "calibration"  # a run without a val split: its calibration images
    console.print(
        f"[bold]{run_dir}[/] → {bundle}: {MODEL_FILE} {fp32.bytes / 1024:.1f} kB, opset "
        f"{meta.versions.opset}, batch {batch}; parity on {p.images} {compared} images: max "
        f"|Δlogit| {p.max_abs_diff:.2g}, top-1 agreement {p.top1_agreement:.0%}; ONNX accuracy {acc} on "
        f"{meta.eval.images} test images (eval.npz)"
    )
    if batchnorms:
        console.print(f"[yellow]note:[/] {batchnorms} BatchNormalization nodes not after a conv remain")
