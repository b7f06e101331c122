"""Training on CPU in NCHW against channels_last (NHWC): images/s of every ladder recipe, side by side.

    python bench/channels_last.py                  # Fashion ladder + teacher (28×28), digits recipes (8×8)
    python bench/channels_last.py --quick          # smoke run: two recipes, 3 epochs, prints only

Each recipe trains `--epochs` epochs twice in this process, `train.channels_last=false` then `=true`
(then the other order, `--rounds 2`), on the CPU with `--threads` torch threads (1: what a frontier
worker gets). Images/s is the median over epochs 2.. of metrics.csv's `images_per_s` (the training pass
plus the val pass; epoch 1 is warm-up); the ratio is NHWC/NCHW. Test accuracy is shown to make the point
that the layout changes only float rounding. Run on a quiet machine: other CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, row, train, write_markdown
from rich.console import Console

FASHION = ["fashion/r1k", "fashion/r2k", "fashion/r5k", "fashion/r10k", "fashion/r20k", "fashion/teacher"]
DIGITS = ["lenet_1k", "lenet_2k", "lenet_small", "lenet_small_dw", "resnet_small", "mobilenet_tiny"]
LAYOUTS = {"NCHW": "false", "NHWC": "true"}


def images_per_s(run_dir: Path) -> float:
    rates = [float(r["images_per_s"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]
    return statistics.median(rates[1:] or rates)


def measure(recipe: str, epochs: int, rounds: int, runs: Path) -> dict:
    """Both layouts, alternating their order each round so that drift favours neither."""
    rates = {name: [] for name in LAYOUTS}
    tests, params = {}, 0
    for i in range(rounds):
        for name in list(LAYOUTS)[:: 1 if i % 2 == 0 else -1]:
            flags = [f"train.epochs={epochs}", f"train.channels_last={LAYOUTS[name]}", "train.device=cpu"]
            summary = train(recipe, flags, runs)
            rates[name].append(images_per_s(Path(summary["run"])))
            tests[name], params = summary["test_acc"], summary["params"]
    return {"rates": {k: statistics.median(v) for k, v in rates.items()}, "tests": tests, "params": params}


def fashion_installed() -> bool:
    return (Path("/usr/share/datasets/fashion-mnist")).is_dir()


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("recipes", nargs="*", help="under recipes/ (default: the Fashion ladder, digits')")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "channels_last.md")
    parser.add_argument("--quick", action="store_true", help="lenet_2k, fashion/r2k: 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.recipes = args.recipes or ["lenet_2k", *(["fashion/r2k"] if fashion_installed() else [])]
        args.epochs, args.rounds = 3, 1
    recipes = args.recipes or [*(FASHION if fashion_installed() else []), *DIGITS]
    torch.set_num_threads(args.threads)
    console, rows, started = Console(), [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            m = measure(recipe, args.epochs, args.rounds, Path(tmp))
            nchw, nhwc = m["rates"]["NCHW"], m["rates"]["NHWC"]
            cells = [f"`{recipe}`", f"{m['params']:,}", f"{nchw:,.0f}", f"{nhwc:,.0f}"]
            cells.append(f"**{nhwc / nchw:.2f}×**")
            rows.append(row([*cells, *(f"{m['tests'][k]:.2%}" for k in LAYOUTS)], console))
    if args.quick:
        return
    minutes = (time.perf_counter() - started) / 60
    details = (
        f"torch {torch.__version__}, {args.threads} torch thread(s), {args.epochs} epochs × "
        f"{args.rounds} rounds per layout (order alternated), {minutes:.0f} min. Images/s: median over "
        "epochs 2.. of the training + val pass (metrics.csv). Fashion recipes: 28×28, batch 64; digits: 8×8."
    )
    columns = {"recipe": "l", "params": "r", "NCHW img/s": "r", "NHWC img/s": "r", "NHWC / NCHW": "r"}
    columns |= {"test NCHW": "r", "test NHWC": "r"}
    title = "Training on CPU: NCHW against channels_last (NHWC)"
    command = " ".join(["python bench/channels_last.py", *sys.argv[1:]])  # the call as typed, for re-running
    write_markdown(args.out, title, command, details, columns, rows, console)


if __name__ == "__main__":
    main()
