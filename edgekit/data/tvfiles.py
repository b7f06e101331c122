"""torchvision's on-disk dataset formats (MNIST idx, CIFAR batches): find the files, fetch them, read."""

from __future__ import annotations

import gzip
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from edgekit.errors import EdgekitError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def tv_mnist(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]


def find_idx(name: str, params: BaseModel) -> dict[str, Path]:
    """The four idx files, flat in root (Debian) or in root/<Class>/raw (torchvision), .gz or not."""
    places = [params.root, params.root / tv_mnist(name).__name__ / "raw"]
    for place in places:
        found = {}
        for key, stem in IDX_FILES.items():
            # Prefer the uncompressed file: it reads without a decompression pass.
            hits = [place / f for f in (stem, f"{stem}.gz") if (place / f).is_file()]
            if hits:
                found[key] = hits[0]
        if len(found) == len(IDX_FILES):
            return found
    if params.download:
        # Fetching here (not in the loader) lets the fingerprint see the files it identifies.
        tv_mnist(name)(str(params.root), train=True, download=True)
        return find_idx(name, params.model_copy(update={"download": False}))
    expected = ", ".join(f"{s}[.gz]" for s in IDX_FILES.values())
    raise EdgekitError(
        f"{params.root}: {name} files not found; expected {expected} in {places[0]} or {places[1]};"
        " set `download: true` to fetch them"
    )


def read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Read one idx file with torchvision's reader, which takes only a plain file path."""
    if path.suffix != ".gz":
        return reader(str(path))
    with tempfile.NamedTemporaryFile(suffix=".idx") as tmp:
        with gzip.open(path, "rb") as compressed:
            tmp.write(compressed.read())
        tmp.flush()
        return reader(tmp.name)


def tv_cifar(name: str):
    """torchvision's CIFAR class with its md5 checks off; the cache fingerprint (size + mtime) already
    identifies the files, and hashing 170 MB on every run would cost more than loading the cache."""
    from torchvision import datasets

    base = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    return type(
        base.__name__,
        (base,),
        {
            "train_list": [[f, None] for f, _ in base.train_list],
            "test_list": [[f, None] for f, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def cifar_files(name: str, params: BaseModel) -> list[Path]:
    cls = tv_cifar(name)
    folder = params.root / cls.base_folder
    names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    files = [folder / f for f in names]
    if all(f.is_file() for f in files):
        return files
    if params.download:
        cls(str(params.root), train=True, download=True)
        return cifar_files(name, params.model_copy(update={"download": False}))
    raise EdgekitError(
        f"{params.root}: {name} files not found; expected {', '.join(names)} in {folder};"
        " set `download: true` to fetch them"
    )
