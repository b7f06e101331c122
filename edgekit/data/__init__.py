"""`prepare`: a dataset name and options → cached uint8 train/val/test tensors and normalization stats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from edgekit.data.cache import cached
from edgekit.data.sources import DATASETS, TEST, TRAIN, VAL, fingerprint
from edgekit.errors import EdgekitError

# Bump when what `prepare` caches changes shape or meaning: old cache files are then ignored.
CACHE_FORMAT = 1

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 images NCHW, int64 labels)


@dataclass
class Prepared:
    train: Split
    val: Split
    test: Split
    class_names: list[str]
    in_channels: int
    image_size: int  # H of the stored images
    mean: list[float]  # per channel, 0..1 scale, from the train split only
    std: list[float]
    fingerprint: str  # identifies the data and the split: same value → same images in each split


def prepare(
    dataset: str,
    options: dict,
    image_size: int | None,
    val_fraction: float,
    test_fraction: float,
    split_seed: int = 0,
    cache_dir: Path | None = None,
) -> Prepared:
    """Load `dataset` (decoded once, then from the cache) and split it into train/val/test.

    Fractions are of the whole dataset. Data without splits is split stratified by class: digits with
    0.15/0.15 gives 1257/270/270. Data with train+test only (MNIST, CIFAR) keeps its test set and carves
    val_fraction × N from train. Data with train/val/test folders keeps all three; the fractions are
    then unused. Options are validated by the dataset's params class (pydantic's ValidationError
    propagates for the caller to format).
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise EdgekitError(f"data.{name} = {value}: expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise EdgekitError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction}: must be < 1"
        )
    entry = DATASETS.get(dataset, "data.dataset")
    params = entry.params.model_validate(options)
    key = {
        "format": CACHE_FORMAT,
        "dataset": dataset,
        "params": params.model_dump(mode="json"),
        "image_size": image_size,
        "fingerprint": fingerprint(dataset, params),
    }

    def build() -> dict:
        source = entry.fn(params, image_size)
        return {
            "images": source.images.contiguous(),
            "labels": source.labels,
            "split": source.split,
            "class_names": list(source.class_names),
        }

    data = cached(key, build, cache_dir)
    images, labels = data["images"], data["labels"]
    parts = split_indices(labels, data["split"], val_fraction, test_fraction, split_seed)
    train, val, test = ((images[parts[s]], labels[parts[s]]) for s in (TRAIN, VAL, TEST))
    mean, std = channel_stats(train[0])
    split_key = {"cache": key, "val": val_fraction, "test": test_fraction, "seed": split_seed}
    return Prepared(
        train=train,
        val=val,
        test=test,
        class_names=data["class_names"],
        in_channels=images.shape[1],
        image_size=images.shape[2],
        mean=mean,
        std=std,
        fingerprint=hashlib.sha256(json.dumps(split_key, sort_keys=True).encode()).hexdigest()[:16],
    )


def split_indices(
    labels: torch.Tensor, split: torch.Tensor | None, val_fraction: float, test_fraction: float, seed: int
) -> dict[int, torch.Tensor]:
    """TRAIN/VAL/TEST → sorted indices: the given splits, with missing test then val carved from train."""
    n = len(labels)
    split = torch.zeros(n, dtype=torch.uint8) if split is None else split
    parts = {s: torch.nonzero(split == s).flatten() for s in (TRAIN, VAL, TEST)}
    # Carve test before val so that, for data without splits, both come out of the whole dataset.
    for part, fraction in ((TEST, test_fraction), (VAL, val_fraction)):
        if len(parts[part]) == 0:
            parts[TRAIN], parts[part] = _carve(parts[TRAIN], labels, _count(fraction, n), seed)
    if len(parts[TRAIN]) == 0:
        raise EdgekitError(f"{n} images leave none for training; lower data.val_fraction/test_fraction")
    return parts


def _count(fraction: float, n: int) -> int:
    # At least one image for a nonzero fraction, so tiny datasets still get a val/test set.
    return max(1, round(fraction * n)) if fraction > 0 else 0


def _carve(
    index: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `count` indices off `index`, stratified by label, deterministic for a seed."""
    from sklearn.model_selection import train_test_split

    if count == 0:
        return index, index[:0]
    if count >= len(index):
        raise EdgekitError(f"cannot take {count} of {len(index)} images for val/test; lower the fractions")
    try:
        keep, carved = train_test_split(
            index.numpy(), test_size=count, stratify=labels[index].numpy(), random_state=seed
        )
    except ValueError:
        # Too few images per class to stratify (a class with one image, or fewer images carved than
        # classes): a plain random split is the best that data allows.
        keep, carved = train_test_split(index.numpy(), test_size=count, random_state=seed)
    return torch.from_numpy(keep).sort().values, torch.from_numpy(carved).sort().values


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale, in float64 chunks (no full float copy)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(4096):
        values = chunk.to(torch.float64).div_(255)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = max(1, images.numel() // channels)
    mean = total / count
    # A floor keeps normalization finite for a constant channel.
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()
