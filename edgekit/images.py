"""Image files → uint8 pixels: the one decode and resize that training (image folders) and `predict` share.

torch-free (PIL and numpy), so a device without torch gives an image the very pixels it had in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# PIL modes with one colour channel (alpha and bit depth aside).
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# What edgekit.json records as the resize, so a reader of a bundle knows how its input was made.
RESIZE = "PIL bilinear, antialiased (edgekit.images.resize)"


def is_gray(path: Path) -> bool:
    """Whether the file has one colour channel, read from its header (no full decode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode in GRAY_MODES
    except Exception as e:  # any failure to open one file is that file's fault; name it
        raise EdgekitError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None


def decode(path: Path, channels: int) -> np.ndarray:
    """uint8 (channels, H, W): gray or RGB as asked, whatever the file holds (alpha dropped)."""
    return read(path, channels)[0]


def read(path: Path, channels: int) -> tuple[np.ndarray, bool]:
    """`decode`, and whether the file's colour channels had to be converted (one open of the file)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            converted = (image.mode in GRAY_MODES) != (channels == 1)
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except Exception as e:
        raise EdgekitError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)), converted


def resize(pixels: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (C, H, W) → (C, size, size) with PIL's antialiased bilinear filter, channel by channel
    (no-op for None or the same size)."""
    from PIL import Image

    if size is None or pixels.shape[1:] == (size, size):
        return pixels
    planes = [np.asarray(Image.fromarray(plane).resize((size, size), Image.BILINEAR)) for plane in pixels]
    return np.stack(planes)


def load(path: Path, channels: int, size: int | None) -> np.ndarray:
    """One file as the model's input pixels: decoded to `channels`, resized to `size`."""
    return resize(decode(path, channels), size)
