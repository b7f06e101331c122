"""Val scored every epoch against every 5th (`train.val_every`): the same weights, in less time.

    python bench/val_every.py           # → bench/val_every.md
    python bench/val_every.py --quick   # smoke run: one rung, few epochs, report in a temp folder

Trains Fashion-MNIST-1800 rungs as shipped (EMA, `train.select: last`) for a short run with
`train.val_every=1` and `=5`, in alternating order, one torch thread (a frontier worker's), through
`edgekit train`'s code path; compares the two runs' best.pt and last.pt weight for weight and their test
accuracy, and times each run's training loop (summary.json's `wall_s`). Run on a quiet machine: other
CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, row, train, write_markdown
from rich.console import Console

from edgekit.runs import load_checkpoint

EPOCHS, ROUNDS, EVERY = 40, 3, 5
RUNGS = ["fashion/r1k", "fashion/r2k", "fashion/r10k"]


def same_weights(a: Path, b: Path) -> bool:
    for name in ("best.pt", "last.pt"):
        x, y = load_checkpoint(a / name)["model"], load_checkpoint(b / name)["model"]
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


def measure(recipe: str, epochs: int, rounds: int, runs: Path) -> list[str]:
    """The table cells for `recipe`: seconds per arm (medians over rounds), the speed-up, identity."""
    seconds: dict[int, list[float]] = {1: [], EVERY: []}
    summaries: dict[int, dict] = {}
    for i in range(rounds):
        for every in (1, EVERY) if i % 2 == 0 else (EVERY, 1):
            overrides = [f"train.epochs={epochs}", f"train.val_every={every}", "train.device=cpu"]
            summaries[every] = train(recipe, [*overrides, f"name=r{i}-every{every}"], runs)
            seconds[every].append(summaries[every]["wall_s"])
    every, each = (statistics.median(seconds[e]) for e in (EVERY, 1))
    ratios = sorted(a / b for a, b in zip(seconds[1], seconds[EVERY], strict=True))
    same = same_weights(Path(summaries[1]["run"]), Path(summaries[EVERY]["run"]))
    tests = summaries[1]["test_acc"], summaries[EVERY]["test_acc"]
    return [
        f"`{recipe}`",
        f"{each:.1f}",
        f"{every:.1f}",
        f"{each / every:.2f}×",
        f"{ratios[0]:.2f}–{ratios[-1]:.2f}×",
        f"{1 - every / each:.1%}",
        "yes" if same else "**no**",
        f"{tests[0]:.2%} / {tests[1]:.2%}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "val_every.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: one rung, temp report")
    args = parser.parse_args()
    epochs, rounds = (EVERY + 1, 1) if args.quick else (EPOCHS, ROUNDS)
    out = Path(tempfile.mkdtemp()) / "val_every.md" if args.quick else args.out
    torch.set_num_threads(1)
    console, started, rows = Console(), time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="edgekit-val-every-") as tmp:
        for recipe in RUNGS[:1] if args.quick else RUNGS:
            rows.append(row(measure(recipe, epochs, rounds, Path(tmp)), console))
    minutes = (time.perf_counter() - started) / 60
    write_markdown(
        out,
        "Val scored every epoch against every 5th",
        "python bench/val_every.py " + " ".join(sys.argv[1:]),
        f"torch {torch.__version__}, one torch thread; {minutes:.1f} min. Each rung as shipped (EMA, "
        f"`train.select: last`), {epochs} epochs, seed 0, trained {rounds} times with `train.val_every=1` "
        f"and `={EVERY}`, the order alternating. Seconds: the median of each arm's training loops "
        "(summary.json's `wall_s`: epochs, val and checkpoints); speed-up: every 1 over every 5, with the "
        "lowest and highest of the rounds' own ratios; saved: the share of the loop's time. Same weights: "
        "best.pt and last.pt equal tensor for tensor (torch.equal) between the arms.",
        {
            "recipe": "l",
            "every epoch s": "r",
            f"every {EVERY}th s": "r",
            "speed-up": "r",
            "per round": "r",
            "saved": "r",
            "same weights": "l",
            "test acc (1 / 5)": "r",
        },
        rows,
        console,
    )


if __name__ == "__main__":
    main()
