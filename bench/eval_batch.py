"""Evaluation on CPU: images per forward, 64 (what edgekit now uses on CPU) against 256 and 1,024.

    python bench/eval_batch.py           # → bench/eval_batch.md
    python bench/eval_batch.py --quick   # smoke run: two models, few rounds, report in a temp folder

A run's val, its test score, the teacher's test score and the dev set are evaluation forwards in eval
mode. Times each shipped model at 28×28 (and lenet_2k at 8×8) over the same 2,048 random images at each
batch size, one torch thread (a frontier worker's), in rounds whose order alternates; and checks the
logits at batch 64 against those at 1,024 (eval mode: each image's output is its own). Run on a quiet
machine: other CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, row, write_markdown
from rich.console import Console

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.models import build_model
from edgekit.recipe import load
from edgekit.train.summary import CPU_EVAL_BATCH, EVAL_BATCH

IMAGES, ROUNDS = 2048, 5
SIZES = [CPU_EVAL_BATCH, 256, EVAL_BATCH]
CASES = [
    ("mobilenet_tiny", 28),
    ("resnet_small", 28),
    ("fashion/teacher", 28),
    ("fashion/r10k", 28),
    ("fashion/r2k", 28),
    ("lenet_2k", 8),
]


def seconds_per_10k(model: torch.nn.Module, x: torch.Tensor, batch: int) -> float:
    started = time.perf_counter()
    for chunk in x.split(batch):
        model(chunk)
    return (time.perf_counter() - started) / len(x) * 10_000


@torch.no_grad()
def measure(recipe: str, size: int, rounds: int) -> tuple[dict[int, float], float]:
    """Median seconds per 10,000 images at each batch size, and the largest |Δ logit| between batch
    64's and 1,024's outputs."""
    rec = load(ROOT / "recipes" / f"{recipe}.yaml")
    model = build_model(rec.model.arch, rec.options("model"), 1, 10, size).eval()
    x = torch.randn(IMAGES, 1, size, size)
    for batch in SIZES:  # warm-up: oneDNN primitives, allocator
        model(x[:batch])
    times: dict[int, list[float]] = {b: [] for b in SIZES}
    for i in range(rounds):
        for batch in SIZES if i % 2 == 0 else SIZES[::-1]:
            times[batch].append(seconds_per_10k(model, x, batch))
    small = torch.cat([model(c) for c in x.split(SIZES[0])])
    big = torch.cat([model(c) for c in x.split(SIZES[-1])])
    return {b: statistics.median(t) for b, t in times.items()}, float((small - big).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "eval_batch.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: two models, temp report")
    args = parser.parse_args()
    rounds = 1 if args.quick else ROUNDS
    out = Path(tempfile.mkdtemp()) / "eval_batch.md" if args.quick else args.out
    torch.set_num_threads(1)
    torch.manual_seed(0)
    console, started, rows = Console(), time.perf_counter(), []
    for recipe, size in CASES[-2:] if args.quick else CASES:
        seconds, diff = measure(recipe, size, rounds)
        cells = [f"`{recipe}`", f"{size}×{size}", *(f"{seconds[b]:.1f}" for b in SIZES)]
        cells += [f"{seconds[EVAL_BATCH] / seconds[CPU_EVAL_BATCH]:.2f}×", f"{diff:.1e}"]
        rows.append(row(cells, console))
    minutes = (time.perf_counter() - started) / 60
    write_markdown(
        out,
        "Evaluation on CPU: images per forward",
        "python bench/eval_batch.py " + " ".join(sys.argv[1:]),
        f"torch {torch.__version__}, one torch thread, eval mode, untrained weights (speed does not depend "
        f"on them); {minutes:.1f} min. Seconds per 10,000 images: the median of {rounds} rounds over "
        f"{IMAGES:,} random images, the batch sizes' order alternating between rounds. Speed-up: "
        f"{EVAL_BATCH:,} over {CPU_EVAL_BATCH}. Δ logit: the largest absolute difference between the "
        "two batch sizes' outputs.",
        {
            "recipe": "l",
            "input": "l",
            **{f"s / 10k at {b}": "r" for b in SIZES},
            f"{CPU_EVAL_BATCH} vs {EVAL_BATCH:,}": "r",
            "largest Δ logit": "r",
        },
        rows,
        console,
    )


if __name__ == "__main__":
    main()
