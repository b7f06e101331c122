"""A development set for the frontier's choices: Fashion-MNIST training images the benchmark never sees.

The benchmark's students see 1,800 of Fashion-MNIST's 60,000 training images (`data.train_per_class:
180`), and their own val split is 270 of those: one val image is 0.37 points, so a choice between two
recipes made on it cannot see a 1-point effect (bench/frontier_choices.md: EMA scored lower on val and
higher on test in every seed). The other 58,200 training images are outside the benchmark; 500 per class
of them, drawn once, score each run's best checkpoint for the *choices* (recipe settings, KD method),
while each run's epoch is still picked on its own val, as a user's would be, and the official 10,000
test images are still read once, for the report.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import torch
from common import ROOT

from edgekit.data import Prepared, cap_per_class, prepare
from edgekit.models import from_checkpoint
from edgekit.prune.prune import accuracy
from edgekit.runs import Run, load_checkpoint

PER_CLASS = 500
DRAW_SEED = 1234  # the dev set's own draw: not a split or training seed any run uses


@cache
def bench_split(train_per_class: int = 180, split_seed: int = 0) -> Prepared:
    """The benchmark's own split of Fashion (recipes/fashion/base.yaml): train, val and the official test."""
    return prepare(
        "fashion_mnist", {}, None, 0.15, 0.0, split_seed=split_seed, train_per_class=train_per_class
    )


@cache
def dev_set(train_per_class: int = 180, split_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """PER_CLASS images per class from Fashion's training images outside the benchmark's capped pool."""
    full = prepare("fashion_mnist", {}, None, 0.0, 0.0)  # every training image, in the source's order
    images, labels = full.train
    # The benchmark caps the same ordered pool with the same seed (data.split_indices), so these are
    # the positions of its 1,800 images; checked against the benchmark's own split below.
    pool = cap_per_class(torch.arange(len(labels)), labels, train_per_class, split_seed)
    bench = bench_split(train_per_class, split_seed)
    seen = torch.cat([bench.train[0], bench.val[0]])
    if sorted(map(bytes, seen.flatten(1).numpy())) != sorted(map(bytes, images[pool].flatten(1).numpy())):
        raise RuntimeError("the dev set's view of the benchmark's capped pool does not match its split")
    outside = torch.ones(len(labels), dtype=torch.bool)
    outside[pool] = False
    chosen = cap_per_class(torch.nonzero(outside).flatten(), labels, PER_CLASS, DRAW_SEED)
    return images[chosen], labels[chosen]


def dev_score(summary: dict) -> float:
    """A run's dev accuracy from its summary (NaN for a run not trained yet)."""
    return math.nan if summary["run"] == "<pending>" else dev_accuracy(summary["run"])


@cache  # a report reads each run's score several times (study, ladder, goals)
def dev_accuracy(run: str | Path) -> float:
    """A run's best checkpoint scored on the dev set, normalized as the run was trained (`run`: as a
    summary names it, relative to the repository)."""
    file = Run.open(ROOT / run).best
    ckpt = load_checkpoint(file)
    return accuracy(from_checkpoint(ckpt, file), dev_set(), ckpt["mean"], ckpt["std"])
