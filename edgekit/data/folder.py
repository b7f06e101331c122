"""Image-folder datasets: check the root/<class>/*.png layout and decode every file once into uint8."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit import images
from edgekit.errors import EdgekitError
from edgekit.images import EXTENSIONS

SPLIT_FOLDERS = ("train", "val", "test")


@dataclass
class Layout:
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    split: list[str] | None  # "train"/"val"/"test" per file, or None without split folders


def scan(root: Path) -> Layout:
    """List the images under `root` by class (and split), with a one-line error for a bad layout."""
    if not root.is_dir():
        raise EdgekitError(f"{root}: no such folder; expected {root}/<class>/*.png")
    if not (root / "train").is_dir():
        classes = _classes(root)
        files, labels = _files(root, classes)
        return Layout(files, labels, classes, None)
    parts = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    classes = _classes(root / "train")
    files, labels, split = [], [], []
    for name in parts:
        found = _classes(root / name)
        if found != classes:
            raise EdgekitError(
                f"{root / name}: class folders {found} differ from those in {root / 'train'}: {classes}"
            )
        part_files, part_labels = _files(root / name, classes)
        files += part_files
        labels += part_labels
        split += [name] * len(part_files)
    return Layout(files, labels, classes, split)


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise EdgekitError(f"{folder}: no class folders; expected {folder}/<class>/*.png")
    return classes


def _files(folder: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not found:
            raise EdgekitError(
                f"{folder / name}: empty class folder; expected images ({', '.join(EXTENSIONS)})"
            )
        files += found
        labels += [label] * len(found)
    return files, labels


def decode(files: list[Path], channels: int | None, image_size: int | None, root: Path) -> torch.Tensor:
    """Decode every file once into a uint8 (N, C, H, W) tensor, resized to image_size when given, with
    `edgekit.images` (the function `predict` uses too, so a photo gets the same pixels on the device).

    channels None picks 1 when every image is grayscale, else 3 (grayscale images are repeated).
    """
    if channels is None:
        channels = 1 if all(images.is_gray(path) for path in files) else 3
    decoded = [images.load(path, channels, image_size) for path in files]
    sizes = {im.shape[1:]: path for im, path in zip(decoded, files, strict=True)}
    if len(sizes) > 1:
        (a, first), (b, other) = list(sizes.items())[:2]
        raise EdgekitError(
            f"{root}: images differ in size ({a[0]}x{a[1]} {first}, {b[0]}x{b[1]} {other}); set "
            "data.image_size to resize them all"
        )
    return torch.from_numpy(np.stack(decoded))
