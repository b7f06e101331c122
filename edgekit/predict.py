"""`edgekit predict`: image files, folders or a .npy → the bundle's preprocessing → onnxruntime → top-k.

torch-free: what a device with `pip install edgekit` runs. `Predictor(bundle)(images)` is the Python API.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import images
from edgekit.bundle import read_bundle
from edgekit.errors import EdgekitError
from edgekit.runtimes import OrtSession, logits_over

BATCH = 32  # images per onnxruntime call


class Predictor:
    """A bundle variant ready to classify: `predictor(pixels)` → class probabilities (N, classes).

    `pixels` are uint8 images (N, C, H, W) at any size, or paths to image files; they are resized with
    `edgekit.images` (the function training used) and normalized with the bundle's mean/std.
    """

    def __init__(self, bundle: Path, variant: str = "fp32", threads: int | None = None):
        self.meta, paths = read_bundle(bundle)
        if variant not in paths.variants:
            raise EdgekitError(f"{bundle}: no variant '{variant}'; it has {', '.join(paths.variants)}")
        self.session = OrtSession(paths.variants[variant], ["CPUExecutionProvider"], threads)
        spec = self.meta.input
        self.channels, self.size = int(spec.shape[1]), spec.image_size
        self.fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
        self.mean = np.array(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.std = np.array(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
        self.class_names = self.meta.class_names

    def pixels(self, files: list[Path]) -> np.ndarray:
        """uint8 (N, C, size, size) from image files, as training decoded them."""
        return np.stack([images.load(f, self.channels, self.size) for f in files])

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.ndim != 4 or pixels.shape[1] != self.channels:
            raise EdgekitError(f"images of shape {pixels.shape}: expected (N, {self.channels}, H, W) uint8")
        if pixels.shape[2:] != (self.size, self.size):  # arrays from elsewhere; gather's are sized already
            pixels = np.stack([images.resize(p, self.size) for p in pixels])
        x = ((pixels.astype(np.float32) / 255 - self.mean) / self.std).astype(self.session.dtype)
        return logits_over(self.session.run, x, self.fixed, BATCH)

    def __call__(self, inputs: np.ndarray | list[Path]) -> np.ndarray:
        pixels = inputs if isinstance(inputs, np.ndarray) else self.pixels([Path(p) for p in inputs])
        logits = self.logits(pixels)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


@dataclass
class Inputs:
    names: list[str]  # a file path, or "file.npy[i]"
    pixels: np.ndarray  # uint8 (N, C, size, size)
    labels: list[int | None]  # from class subfolders named like the bundle's classes, else None
    converted: int = 0  # files whose colour channels were converted to the model's (said once)


def gather(sources: list[Path], predictor: Predictor) -> Inputs:
    """Files, folders (recursively, sorted) and .npy arrays of uint8 images, in the order given."""
    names, arrays, labels, converted = [], [], [], 0
    for source in sources:
        if source.suffix == ".npy" and source.is_file():
            array = _npy(source, predictor.channels)
            names += [f"{source}[{i}]" for i in range(len(array))]
            arrays += [images.resize(a, predictor.size) for a in array]
            labels += [None] * len(array)
            continue
        files = _files(source)
        for file in files:
            pixels, changed = images.read(file, predictor.channels)
            arrays.append(images.resize(pixels, predictor.size))
            converted += changed
        names += [str(f) for f in files]
        labels += [_label(f, source, predictor.class_names) for f in files]
    if not names:
        raise EdgekitError("predict: no inputs given; name image files, folders or .npy files")
    pixels = np.stack(arrays)  # each resized once, as it was read
    return Inputs(names, pixels, labels, converted)


def _files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise EdgekitError(f"{source}: no such file or folder")
    found = sorted(p for p in source.rglob("*") if p.suffix.lower() in images.EXTENSIONS and p.is_file())
    if not found:
        raise EdgekitError(f"{source}: no images in it ({', '.join(images.EXTENSIONS)}, in any subfolder)")
    return found


def _label(file: Path, root: Path, class_names: list[str]) -> int | None:
    """The class a file's folder names, when it sits in `root/<class>/`."""
    if file.parent == root or file.parent.name not in class_names:
        return None
    return class_names.index(file.parent.name)


def _npy(path: Path, channels: int) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgekitError(f"{path}: not a readable .npy file ({e})") from None
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        raise EdgekitError(
            f"{path}: {array.dtype} {array.shape}; expected uint8 images (N, C, H, W) or (N, H, W)"
        )
    array = array[:, None] if array.ndim == 3 else array
    if array.shape[1] != channels:
        raise EdgekitError(f"{path}: images with {array.shape[1]} channels; the model takes {channels}")
    return array


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[list[tuple[str, float]]]:
    order = np.argsort(-probabilities, axis=1)[:, :k]
    return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probabilities, order, strict=True)]


def per_class(predicted: np.ndarray, labels: list[int | None], class_names: list[str]) -> dict | None:
    """Accuracy and recall per class over the inputs whose folder names their class; None without any."""
    known = [(p, y) for p, y in zip(predicted, labels, strict=True) if y is not None]
    if not known:
        return None
    recall = {}
    for c, name in enumerate(class_names):
        mine = [p for p, y in known if y == c]
        if mine:
            recall[name] = {"images": len(mine), "recall": sum(p == c for p in mine) / len(mine)}
    return {"images": len(known), "accuracy": sum(p == y for p, y in known) / len(known), "recall": recall}


def write(out: Path, names: list[str], tops: list[list[tuple[str, float]]], scores: dict | None) -> None:
    """--out: .csv (file, top-k classes and probabilities) or .json (the same, plus the per-class scores)."""
    if out.suffix == ".json":
        rows = [
            {"file": n, "top": [{"class": c, "probability": p} for c, p in t]}
            for n, t in zip(names, tops, strict=True)
        ]
        out.write_text(json.dumps({"predictions": rows, "scores": scores}, indent=2) + "\n")
        return
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        k = len(tops[0])
        writer.writerow(["file", *[f"{w}{i + 1}" for i in range(k) for w in ("class", "probability")]])
        for name, top in zip(names, tops, strict=True):
            writer.writerow([name, *[v for c, p in top for v in (c, f"{p:.6f}")]])


SHOWN = 20  # predictions printed; --out has them all


def predict_files(bundle, sources, variant, top, out, threads, console) -> dict | None:
    """`edgekit predict`: print the top-k of each input (the first SHOWN), the folder scores, --out."""
    from rich.markup import escape

    if out is not None and out.suffix not in (".csv", ".json"):
        raise EdgekitError(f"--out {out}: expected a .csv or .json file")
    predictor = Predictor(bundle, variant, threads)
    found = gather(sources, predictor)
    if found.converted:
        kind = "gray" if predictor.channels == 1 else "RGB"
        console.print(f"note: {found.converted} images converted to {kind}, as the model takes")
    probabilities = predictor(found.pixels)
    tops = top_k(probabilities, predictor.class_names, min(top, len(predictor.class_names)))
    scores = per_class(probabilities.argmax(1), found.labels, predictor.class_names)
    for name, row in list(zip(found.names, tops, strict=True))[:SHOWN]:
        console.print(f"{escape(name)}: " + ", ".join(f"{c} {q:.1%}" for c, q in row), highlight=False)
    if len(tops) > SHOWN:
        console.print(f"… and {len(tops) - SHOWN} more" + (f" (all in {out})" if out else " (--out for all)"))
    if scores:
        recall = ", ".join(f"{c} {s['recall']:.1%}" for c, s in scores["recall"].items())
        console.print(
            f"accuracy {scores['accuracy']:.2%} on {scores['images']} labelled images; recall: {recall}"
        )
    if out is not None:
        write(out, found.names, tops, scores)
        console.print(f"wrote {out}")
    return scores
