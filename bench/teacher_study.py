"""Stronger teachers for Fashion-MNIST-1800: wider and residual members under the teacher's regularisation.

    python bench/teacher_study.py                    # every candidate, seeds 0 and 1 → bench/teacher_study.md
    python bench/teacher_study.py --candidates shipped,wide48 --seeds 0,1,2,3,4,5,6 --jobs 2

The frontier's margin goal asks for a teacher 3 points above the best rung trained alone. The shipped
teacher (r20k's 19k-parameter net with erasing and mixup) stalls near 88.5% on the dev set however many
members its ensemble has (bench/frontier_choices.md), and the larger nets tried before overfit, but they
were trained with flips and crops only. Here each candidate is `fashion/teacher` with one change, trained
with its regularisation (erasing 0.25, mixup 0.2, 300 epochs). Each is read on bench/frontier_dev.py's
5,000-image dev set: its members one by one, and as the ensemble the students would learn from (logits
averaged, as `distill.teacher` with several runs averages them), also with each member's logits averaged
over the image and its mirror. Test is shown, not used. Runs go through bench/frontier.py's cache, so the
members of the chosen teacher are the frontier's own when it is given the same overrides (`--teacher-set`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import torch
from common import ROOT, row, write_markdown
from frontier_dev import bench_split, dev_set
from frontier_runs import COMMON, Cache, train_in_waves
from rich.console import Console
from tune import BENCHES as TUNE_BENCHES  # the overrides that put a digits recipe on Fashion

from edgekit.data.loader import DeviceLoader
from edgekit.models import from_checkpoint
from edgekit.orchestrate.sweep import yaml_scalar
from edgekit.runs import Run, load_checkpoint

# Each candidate as its recipe and overrides (most of them of recipes/fashion/teacher.yaml), listed most
# expensive first: in the default call a wave's long runs start first and short ones fill the tail.
TEACHER = "fashion/teacher"
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    # MobileNet-tiny (101k) as it trains on Fashion in bench/tune_fashion_mobilenet.md (flips, 2-pixel
    # crops, 100 epochs, no mixup or erasing) at lr 0.285, that grid's best by dev (88.5% for one run,
    # where the shipped teacher's members average 87.0%).
    "mobilenet": (
        "mobilenet_tiny",
        [
            *(f"{k}={yaml_scalar(v)}" for k, v in TUNE_BENCHES["fashion"][1].items()),
            "train.optimizer.lr=0.285",
        ],
    ),
    "resnet": (
        TEACHER,
        [
            "model.arch=resnet_small",
            "model.stem_channels=16",
            "model.channels=[32, 64]",
            "model.blocks=[1, 1]",
            "model.head=linear",
        ],
    ),
    "wide48": (TEACHER, ["model.channels=[48, 96, 192]"]),
    "wide32": (TEACHER, ["model.channels=[32, 64, 128]"]),
    "cutmix": (TEACHER, ["data.augment.mixup=0", "data.augment.cutmix=1.0"]),
    "shipped": (TEACHER, []),
}


def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (uint8) and labels of "dev" or "test"."""
    return dev_set() if name == "dev" else bench_split().test


@cache  # a report reads each run's logits for its own row and again for the pool
@torch.no_grad()
def logits(run: str, where: str, mirror: bool) -> torch.Tensor:
    """A run's best checkpoint's logits on `split(where)`, normalised as the run was trained."""
    images = split(where)[0]
    file = Run.open(ROOT / run).best
    ckpt = load_checkpoint(file)
    model = from_checkpoint(ckpt, file).eval()
    loader = DeviceLoader(images, torch.zeros(len(images)), 1000, ckpt["mean"], ckpt["std"])
    out = torch.cat([model(x) for x, _ in loader])
    if mirror:
        out = (out + torch.cat([model(x.flip(-1)) for x, _ in loader])) / 2
    return out


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return (scores.argmax(1) == labels).float().mean().item()


def measure(cache: Cache, chosen: dict[str, list[int]], common: list[str]) -> dict[str, list[dict]]:
    return {
        name: [cache.train(CANDIDATES[name][0], [*CANDIDATES[name][1], f"seed={s}", *common]) for s in seeds]
        for name, seeds in chosen.items()
    }


def parse_candidates(text: str, seeds: list[int]) -> dict[str, list[int]]:
    """ "shipped:0-6,wide32" → {"shipped": [0, …, 6], "wide32": seeds}; ValueError for an unknown name."""
    chosen = {}
    for item in text.split(","):
        name, _, span = item.partition(":")
        if name not in CANDIDATES:
            raise ValueError(f"--candidates: unknown {name!r}; expected some of {', '.join(CANDIDATES)}")
        low, _, high = span.partition("-")
        chosen[name] = list(range(int(low), int(high or low) + 1)) if span else seeds
    return chosen


def report_row(name: str, runs: list[dict], console: Console) -> str:
    labels = {where: split(where)[1] for where in ("dev", "test")}
    members = [accuracy(logits(r["run"], "dev", False), labels["dev"]) for r in runs]

    sizes = {r["params"] for r in runs}
    params = f"{sizes.pop():,}" if len(sizes) == 1 else f"{sum(r['params'] for r in runs):,} in all"

    def ensemble(where: str, mirror: bool) -> float:
        return accuracy(torch.stack([logits(r["run"], where, mirror) for r in runs]).mean(0), labels[where])

    return row(
        [
            f"`{name}`",
            params,
            f"{statistics.mean(r['bench_s'] for r in runs) / 60:.1f}",
            ", ".join(f"{m:.2%}" for m in members),
            f"{statistics.mean(members):.2%}",
            f"**{ensemble('dev', False):.2%}**",
            f"{ensemble('dev', True):.2%}",
            f"{statistics.mean(r['val_acc'] for r in runs):.2%}",
            f"{ensemble('test', False):.2%}",
        ],
        console,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help=f"from {', '.join(CANDIDATES)}; NAME:0-6 gives one its own seeds",
    )
    parser.add_argument("--seeds", default="0,1", help="the members' seeds (frontier's teacher: 0–6)")
    parser.add_argument("--pool", action="store_true", help="a last row: every member above as one ensemble")
    parser.add_argument("--jobs", type=int, default=2, help="training processes (one thread each)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "frontier", help="the frontier's cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "teacher_study.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, temp cache and report")
    args = parser.parse_args()
    common = [*COMMON, *(["train.epochs=2"] if args.quick else [])]
    if args.quick:
        args.cache = Path(tempfile.mkdtemp(prefix="teacher_study_"))
        args.out = args.cache / "teacher_study.md"
    try:
        chosen = parse_candidates(args.candidates, [int(s) for s in args.seeds.split(",")])
    except ValueError as e:
        parser.error(str(e))  # one line, exit code 2
    console, started = Console(), time.perf_counter()
    if args.jobs > 1:
        train_in_waves(lambda cache: measure(cache, chosen, common), args.cache, args.jobs, console)
    runs = measure(Cache(args.cache, console), chosen, common)
    rows = [report_row(name, runs[name], console) for name in chosen]
    if args.pool:
        rows.append(report_row("every member above", [r for name in chosen for r in runs[name]], console))
    minutes = (time.perf_counter() - started) / 60
    write_markdown(
        args.out,
        "Stronger teachers for Fashion-MNIST-1800",
        "python bench/teacher_study.py " + " ".join(sys.argv[1:]),
        f"{minutes:.0f} min for this call (cached runs are not re-run; run minutes are each run's "
        f"own, with {args.jobs} jobs sharing the cores). Members: seeds {args.seeds} unless the call gives "
        "a candidate its own. Dev: 5,000 Fashion training images no run trains on (bench/frontier_dev.py); "
        "ensembles average the members' logits; "
        "test (10,000 images) is shown, not used.",
        {
            "candidate": "l",
            "params": "r",
            "min per run": "r",
            "dev per member": "l",
            "member dev (mean)": "r",
            "ensemble dev": "r",
            "+ mirror, dev": "r",
            "val (mean)": "r",
            "ensemble test": "r",
        },
        rows,
        console,
    )


if __name__ == "__main__":
    main()
