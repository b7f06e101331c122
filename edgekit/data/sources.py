"""`DATASETS` registry: each dataset → a `Source` (uint8 NCHW images, labels, class names, splits)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from edgekit.data import folder
from edgekit.data.tvfiles import cifar_files, find_idx, read_idx, tv_cifar, tv_mnist
from edgekit.errors import EdgekitError
from edgekit.recipe_schema import bind
from edgekit.registry import Registry

DATASETS = Registry("dataset")
bind(("data",), DATASETS)

# name → fn(params) -> str: what identifies a dataset's content without decoding it (paths, sizes,
# mtimes, library versions). `prepare` keys the decoded-tensor cache on it, so it must stay cheap.
FINGERPRINTS: dict[str, Callable[[BaseModel], str]] = {}

TRAIN, VAL, TEST = 0, 1, 2
_SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST}


@dataclass
class Source:
    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    split: torch.Tensor | None  # uint8 (N,): TRAIN/VAL/TEST, or None when the data has no splits
    fingerprint: str


def fingerprint_of(name: str) -> Callable:
    """Register the cheap content fingerprint of dataset `name`."""

    def add(fn: Callable[[BaseModel], str]) -> Callable[[BaseModel], str]:
        FINGERPRINTS[name] = fn
        return fn

    return add


def fingerprint(name: str, params: BaseModel) -> str:
    """The content fingerprint of dataset `name` with validated `params` (no decoding)."""
    return FINGERPRINTS[name](params)


def file_fingerprint(paths: Iterable[Path], *extra: str) -> str:
    """sha256 over resolved paths, sizes and mtimes: changes when any file is replaced or edited."""
    digest = hashlib.sha256("\n".join(extra).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"\n{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def resize(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """uint8 NCHW to image_size × image_size (no-op when None) with `edgekit.images.resize`, the function
    `predict` applies on the device, so a model sees the same pixels there as in training."""
    if image_size is None or tuple(images.shape[-2:]) == (image_size, image_size):
        return images
    from edgekit.images import resize as resize_one

    return torch.from_numpy(np.stack([resize_one(im, image_size) for im in images.numpy()]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- digits


@fingerprint_of("digits")
def _digits_fingerprint(params: BaseModel) -> str:
    import sklearn

    return f"sklearn-{sklearn.__version__}"


@DATASETS.register("digits")
def digits(params: BaseModel, image_size: int | None) -> Source:
    """scikit-learn's 1,797 real 8×8 handwritten digits, embedded in the package: no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range every other source uses.
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)
    return Source(
        images=resize(images, image_size),
        labels=torch.from_numpy(bunch.target).long(),
        class_names=[str(c) for c in bunch.target_names],
        split=None,
        fingerprint=_digits_fingerprint(params),
    )


# ------------------------------------------------------------------------------- MNIST-format (idx)


class MnistParams(_Strict):
    root: Path = Path("./data")
    download: bool = False


class FashionMnistParams(_Strict):
    # Where Debian's dataset-fashion-mnist package installs the real files (flat .gz files).
    root: Path = Path("/usr/share/datasets/fashion-mnist")
    download: bool = False


def _load_idx(name: str, params: BaseModel, image_size: int | None) -> Source:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    files = find_idx(name, params)
    try:
        train_x = read_idx(files["train_images"], read_image_file)
        test_x = read_idx(files["test_images"], read_image_file)
        train_y = read_idx(files["train_labels"], read_label_file)
        test_y = read_idx(files["test_labels"], read_label_file)
    except (AssertionError, ValueError, TypeError, OSError, RuntimeError) as e:
        raise EdgekitError(f"{params.root}: not valid {name} idx files ({e or type(e).__name__})") from e
    split = torch.cat([torch.full((len(train_y),), TRAIN), torch.full((len(test_y),), TEST)])
    return Source(
        images=resize(torch.cat([train_x, test_x]).unsqueeze(1), image_size),
        labels=torch.cat([train_y, test_y]).long(),
        class_names=list(tv_mnist(name).classes),
        split=split.to(torch.uint8),
        fingerprint=file_fingerprint(files.values(), name),
    )


def _idx_fingerprint(name: str, params: BaseModel) -> str:
    return file_fingerprint(find_idx(name, params).values(), name)


@DATASETS.register("mnist", MnistParams)
def mnist(params: BaseModel, image_size: int | None) -> Source:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28×28 gray images."""
    return _load_idx("mnist", params, image_size)


@DATASETS.register("fashion_mnist", FashionMnistParams)
def fashion_mnist(params: BaseModel, image_size: int | None) -> Source:
    """Fashion-MNIST clothing: 60,000 train + 10,000 test 28×28 gray images in 10 classes."""
    return _load_idx("fashion_mnist", params, image_size)


# ------------------------------------------------------------------------------------------- CIFAR


class CifarParams(_Strict):
    root: Path = Path("./data")
    download: bool = False


def _load_cifar(name: str, params: BaseModel, image_size: int | None) -> Source:
    files = cifar_files(name, params)
    parts = [tv_cifar(name)(str(params.root), train=train) for train in (True, False)]
    # torchvision keeps the pixels as numpy HWC; the rest of edgekit wants NCHW tensors.
    images = torch.from_numpy(np.concatenate([p.data for p in parts])).permute(0, 3, 1, 2).contiguous()
    split = torch.cat([torch.full((len(p.targets),), s) for p, s in zip(parts, (TRAIN, TEST), strict=True)])
    return Source(
        images=resize(images, image_size),
        labels=torch.tensor(parts[0].targets + parts[1].targets, dtype=torch.int64),
        class_names=list(parts[0].classes),
        split=split.to(torch.uint8),
        fingerprint=file_fingerprint(files, name),
    )


def _cifar_fingerprint(name: str, params: BaseModel) -> str:
    return file_fingerprint(cifar_files(name, params), name)


@DATASETS.register("cifar10", CifarParams)
def cifar10(params: BaseModel, image_size: int | None) -> Source:
    """CIFAR-10: 50,000 train + 10,000 test 32×32 colour images in 10 classes."""
    return _load_cifar("cifar10", params, image_size)


@DATASETS.register("cifar100", CifarParams)
def cifar100(params: BaseModel, image_size: int | None) -> Source:
    """CIFAR-100: 50,000 train + 10,000 test 32×32 colour images in 100 (fine) classes."""
    return _load_cifar("cifar100", params, image_size)


FINGERPRINTS.update(
    mnist=partial(_idx_fingerprint, "mnist"),
    fashion_mnist=partial(_idx_fingerprint, "fashion_mnist"),
    cifar10=partial(_cifar_fingerprint, "cifar10"),
    cifar100=partial(_cifar_fingerprint, "cifar100"),
)


# ----------------------------------------------------------------------------------- image folders


class ImageFolderParams(_Strict):
    root: Path
    channels: Literal[1, 3] | None = None  # None: 1 when every image is grayscale, else 3


@fingerprint_of("imagefolder")
def _folder_fingerprint(params: BaseModel) -> str:
    layout = folder.scan(params.root)
    return file_fingerprint(layout.files, "imagefolder", str(params.root.resolve()))


@DATASETS.register("imagefolder", ImageFolderParams)
def imagefolder(params: BaseModel, image_size: int | None) -> Source:
    """Your own images: root/<class>/*.png, or root/{train,val,test}/<class>/*.png."""
    layout = folder.scan(params.root)
    return Source(
        images=folder.decode(layout.files, params.channels, image_size, params.root),
        labels=torch.tensor(layout.labels, dtype=torch.int64),
        class_names=layout.class_names,
        split=None if layout.split is None else torch.tensor([_SPLIT_CODES[s] for s in layout.split]).byte(),
        fingerprint=file_fingerprint(layout.files, "imagefolder", str(params.root.resolve())),
    )
