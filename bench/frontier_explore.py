"""Single-seed trials that chose the `recipes/fashion/` settings and teacher (by val) on Fashion-MNIST-1800.

    python bench/frontier_explore.py      # one JSON line per trial; results in bench/frontier_choices.md

Each trial is `edgekit train recipes/fashion/<recipe>.yaml <overrides>` at the recipes' settings of the time
(150 epochs, hflip + crop 2, SGD lr 0.1, batch 64), seed 0. One seed and a 270-image val split: a guide for
choosing, not a comparison; bench/frontier.py measures the chosen ladder over seeds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import train

REG = ["data.augment.erasing=0.25", "data.augment.mixup=0.2"]
TRIALS = [
    ("r1k", "fashion/r1k", []),
    ("r2k", "fashion/r2k", []),
    ("r5k", "fashion/r5k", []),
    ("r10k", "fashion/r10k", []),
    ("r20k", "fashion/r20k", []),
    ("r5k standard convs [6,12,24]", "fashion/r20k", ["model.channels=[6,12,24]"]),
    ("r2k + random erasing 0.25", "fashion/r2k", ["data.augment.erasing=0.25"]),
    ("r2k lr 0.05", "fashion/r2k", ["train.optimizer.lr=0.05"]),
    (
        "r2k AdamW lr 0.01 wd 0.05",
        "fashion/r2k",
        ["train.optimizer.name=adamw", "train.optimizer.lr=0.01", "train.optimizer.weight_decay=0.05"],
    ),
    ("r2k 300 epochs", "fashion/r2k", ["train.epochs=300"]),
    ("teacher: LeNet [32,64,128] (94k)", "fashion/r20k", ["model.channels=[32,64,128]"]),
    (
        "teacher: resnet_small [32,64] (198k)",
        "fashion/r20k",
        ["model.arch=resnet_small", "model.stem_channels=16", "model.channels=[32,64]", "model.blocks=[1,1]"],
    ),
    ("teacher: r20k + erasing + mixup, 300 epochs", "fashion/r20k", [*REG, "train.epochs=300"]),
    (
        "teacher: LeNet [24,48,96] + erasing + mixup, 300 epochs",
        "fashion/r20k",
        ["model.channels=[24,48,96]", *REG, "train.epochs=300"],
    ),
]


def main() -> None:
    runs = Path(tempfile.mkdtemp(prefix="edgekit-explore-"))
    for name, recipe, overrides in TRIALS:
        started = time.perf_counter()
        s = train(recipe, ["train.epochs=150", *overrides, "train.device=cpu"], runs)
        row = {"trial": name, "params": s["params"], "val": s["val_acc"], "test": s["test_acc"]}
        print(json.dumps({**row, "best_epoch": s["best_epoch"], "s": round(time.perf_counter() - started)}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
