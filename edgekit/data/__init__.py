"""`prepare`: a dataset name and options → cached uint8 train/val/test tensors and normalization stats."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgekit.data.cache import cached
from edgekit.data.sources import DATASETS, TEST, TRAIN, VAL, fingerprint
from edgekit.errors import EdgekitError

# Bump when what `prepare` caches changes shape or meaning: old cache files are then ignored.
CACHE_FORMAT = 2  # 2: image folders resized with edgekit.images (PIL), as `predict` does
# Fewer training images of a class than this is an error: a split that leaves (almost) nothing to learn
# a class from is a mistake in the fractions or the cap, never what the user wanted.
MIN_TRAIN_PER_CLASS = 2

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
    notes: list[str] = field(default_factory=list)  # what the caller should tell the user once

    @property
    def has_val(self) -> bool:
        """False for a run trained on every non-test image (`data.val_fraction: 0`)."""
        return len(self.val[1]) > 0

    def per_class(self) -> dict[str, list[int]]:
        """split name → images of each class, for the run's log and summary."""
        k = len(self.class_names)
        return {
            name: part[1].bincount(minlength=k).tolist()
            for name, part in (("train", self.train), ("val", self.val), ("test", self.test))
        }

    def describe(self) -> str:
        """'train 1530 (153/class), val 270 (27/class), test 10000 (1000/class)'."""
        cells = []
        for name, counts in self.per_class().items():
            low, high = min(counts), max(counts)
            each = f"{low}/class" if low == high else f"{low}–{high}/class"
            cells.append(f"{name} {sum(counts)} ({each})")
        return ", ".join(cells)


def prepare_for(recipe) -> Prepared:
    """The data a recipe's `data:` section describes: the one way a stage loads a run's data."""
    d = recipe.data
    return prepare(
        d.dataset,
        recipe.options("data"),
        d.image_size,
        d.val_fraction,
        d.test_fraction,
        split_seed=d.split_seed,
        train_per_class=d.train_per_class,
    )


def prepare(
    dataset: str,
    options: dict,
    image_size: int | None,
    val_fraction: float,
    test_fraction: float,
    split_seed: int = 0,
    cache_dir: Path | None = None,
    train_per_class: int | None = None,
) -> Prepared:
    """Load `dataset` (decoded once, then from the cache) and split it into train/val/test.

    Data without splits is split stratified by class, both fractions of the whole dataset: digits with
    0.15/0.15 gives 1257/270/270. Data with train+test only (MNIST, CIFAR, a train/ test/ folder) keeps
    its test set and carves val_fraction × the *train* images from train. Data with train/val/test
    folders keeps all three. `train_per_class` caps the training pool at N images per class (seeded,
    stratified) before val is carved, and val is then a fraction of the capped pool: the small-data
    regime. Options are validated by the dataset's params class (pydantic's ValidationError propagates
    for the caller to format).
    """
    _check_split_settings(val_fraction, test_fraction, train_per_class)
    key, data = _decoded(dataset, options, image_size, cache_dir)
    images, labels = data["images"], data["labels"]
    parts = split_indices(labels, data["split"], val_fraction, test_fraction, split_seed, train_per_class)
    _check_enough_to_train(parts, labels, data["class_names"])
    train, val, test = ((images[parts[s]], labels[parts[s]]) for s in (TRAIN, VAL, TEST))
    mean, std = channel_stats(train[0])
    split_key = {"cache": key, "val": val_fraction, "test": test_fraction, "seed": split_seed}
    if train_per_class is not None:  # absent otherwise, so uncapped runs keep their fingerprints
        split_key["train_per_class"] = train_per_class
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
        notes=_cap_notes(labels, data["split"], data["class_names"], train_per_class),
    )


def _check_split_settings(val_fraction: float, test_fraction: float, train_per_class: int | None) -> None:
    if train_per_class is not None and train_per_class < 1:
        raise EdgekitError(f"data.train_per_class = {train_per_class}: expected a positive count")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise EdgekitError(f"data.{name} = {value}: expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise EdgekitError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction}: must be < 1"
        )


def _decoded(
    dataset: str, options: dict, image_size: int | None, cache_dir: Path | None
) -> tuple[dict, dict]:
    """The whole dataset as uint8 tensors, decoded once and then read from the cache, with its cache key
    (which the split's fingerprint builds on)."""
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

    return key, cached(key, build, cache_dir)


def _cap_notes(labels: torch.Tensor, split, class_names: list[str], cap: int | None) -> list[str]:
    """One note when the cap exceeds what some classes have (they are used whole)."""
    if cap is None:
        return []
    pool = labels if split is None else labels[split == TRAIN]
    counts = pool.bincount(minlength=len(class_names)).tolist()
    short = [f"{class_names[c]} ({n})" for c, n in enumerate(counts) if n < cap]
    if not short:
        return []
    if len(short) == len(counts):
        return [f"data.train_per_class = {cap}: no class has that many (at most {max(counts)}); using all"]
    return [f"data.train_per_class = {cap}: more than {', '.join(short)} have; using all of those"]


def _check_enough_to_train(parts: dict[int, torch.Tensor], labels: torch.Tensor, names: list[str]) -> None:
    counts = labels[parts[TRAIN]].bincount(minlength=len(names))
    present = labels.bincount(minlength=len(names)) > 0
    short = [c for c in range(len(names)) if present[c] and counts[c] < MIN_TRAIN_PER_CLASS]
    if short:
        sizes = ", ".join(f"{n} {len(parts[s])}" for n, s in (("train", TRAIN), ("val", VAL), ("test", TEST)))
        worst = min(short, key=lambda c: int(counts[c]))
        raise EdgekitError(
            f"data: the split leaves {int(counts[worst])} training images of class '{names[worst]}' "
            f"({sizes}); at least {MIN_TRAIN_PER_CLASS} per class are needed: lower "
            "data.val_fraction/test_fraction or raise data.train_per_class"
        )


def split_indices(
    labels: torch.Tensor,
    split: torch.Tensor | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    train_per_class: int | None = None,
) -> dict[int, torch.Tensor]:
    """TRAIN/VAL/TEST → sorted indices: the given splits, with missing test then val carved from train.

    Without splits both fractions are of the whole dataset. With a given test split (or a cap), val is
    a fraction of the training pool: 1,800 train + 10,000 test images must not lose 1,770 to val.
    """
    n = len(labels)
    whole = split is None and train_per_class is None
    split = torch.zeros(n, dtype=torch.uint8) if split is None else split
    parts = {s: torch.nonzero(split == s).flatten() for s in (TRAIN, VAL, TEST)}
    if len(parts[TEST]) == 0:
        parts[TRAIN], parts[TEST] = _carve(parts[TRAIN], labels, _count(test_fraction, n), seed)
    if train_per_class is not None:
        parts[TRAIN] = cap_per_class(parts[TRAIN], labels, train_per_class, seed)
    if len(parts[VAL]) == 0:
        pool = n if whole else len(parts[TRAIN])
        parts[TRAIN], parts[VAL] = _carve(parts[TRAIN], labels, _count(val_fraction, pool), seed)
    if len(parts[TRAIN]) == 0:
        raise EdgekitError(f"{n} images leave none for training; lower data.val_fraction/test_fraction")
    return parts


def cap_per_class(index: torch.Tensor, labels: torch.Tensor, cap: int, seed: int) -> torch.Tensor:
    """At most `cap` of `index` per class, drawn at random for `seed` (a class with fewer keeps all)."""
    generator = torch.Generator().manual_seed(seed)
    order = index[torch.randperm(len(index), generator=generator)]
    ranks = torch.zeros(len(order), dtype=torch.long)
    for c in labels[order].unique():  # the rank of each image among its class, in the drawn order
        mine = labels[order] == c
        ranks[mine] = torch.arange(int(mine.sum()))
    return order[ranks < cap].sort().values


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
