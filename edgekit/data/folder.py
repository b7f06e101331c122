"""Image-folder datasets: check the root/<class>/*.png layout and decode every file once into uint8."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit.errors import EdgekitError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
# PIL modes with one colour channel (alpha and bit depth aside).
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


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
    """Decode every file once into a uint8 (N, C, H, W) tensor, resized to image_size when given.

    channels None picks 1 when every image is grayscale, else 3 (grayscale images are repeated).
    """
    from torchvision.transforms.v2 import functional as F

    images = [_decode_one(path, channels) for path in files]
    if channels is None:
        channels = 1 if all(im.shape[0] == 1 for im in images) else 3
    images = [im.expand(channels, -1, -1) if im.shape[0] != channels else im for im in images]
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_size[tuple(im.shape[1:])].append(i)
    if image_size is None:
        if len(by_size) > 1:
            (a, first), (b, other) = list(by_size.items())[:2]
            raise EdgekitError(
                f"{root}: images differ in size ({a[0]}x{a[1]} {files[first[0]]}, {b[0]}x{b[1]}"
                f" {files[other[0]]}); set data.image_size to resize them all"
            )
        return torch.stack(images)
    out = torch.empty(len(images), channels, image_size, image_size, dtype=torch.uint8)
    # Images of one size are resized as one batch; per-file work is only the decode.
    for index in by_size.values():
        batch = torch.stack([images[i] for i in index])
        out[index] = F.resize(batch, [image_size, image_size], antialias=True)
    return out


def _decode_one(path: Path, channels: int | None) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            # Decode straight to the target layout; with channels None keep gray as gray for now.
            gray = channels == 1 or (channels is None and image.mode in GRAY_MODES)
            pixels = np.asarray(image.convert("L" if gray else "RGB"))
    except Exception as e:  # any failure to decode one file is that file's fault; name it
        raise EdgekitError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()
