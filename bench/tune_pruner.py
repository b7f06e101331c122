"""Hyperband's settings for a bayes sweep, chosen on one grid and judged on another, by replay.

    python bench/tune_pruner.py   # → bench/tune_pruner.md (trains the tuning grid once: ~20 min on 2 cores)
    python bench/tune_pruner.py --quick   # smoke run: digits, 4 points, 4 epochs, temp folder

`bench/tune_search.py` judges bayes + hyperband on a grid of `fashion/r2k` trained with seed 0. Choosing
the pruner's `min_iter` and `eta` on that grid would tune the search to the grid that judges it, so the
settings are chosen on a second grid of the same space trained with another seed (`--tune-seed`), then
the chosen and the default settings are replayed on the judging grid (`--judge-work`, the folder
`tune_search.py --work` kept). Each setting is replayed over `--replay` sampler seeds
(`bench/tune_replay.py`: no training) and scored by how many seeds reach the grid's best val (within one
val image) within 50% of the grid's epochs, then by the median share. TPE without a pruner is the
baseline a pruner must beat.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT
from rich.console import Console
from tune_replay import replay
from tune_search import (
    FIXED,
    QUICK,
    QUICK_SPACE,
    SPACES,
    fraction,
    heading,
    hyperband,
    run_sweep,
    sweep_file,
    val_images,
)

MIN_ITERS, ETAS = (3, 6, 12, 20), (2, 3, 4)  # for 60-epoch trials; scaled with --epochs


def settings(epochs: int) -> dict[str, dict | None]:
    """Each candidate early_terminate by its label; None: no pruner."""
    out: dict[str, dict | None] = {"no pruner": None}
    for min_iter in sorted({max(1, round(m * epochs / 60)) for m in MIN_ITERS}):
        for eta in ETAS:
            out[f"min_iter {min_iter}, eta {eta}"] = hyperband(epochs, min_iter, eta)
    return out


def grid(work: Path, space: dict, fixed: dict, parallel: int) -> tuple[Path, float, int]:
    """Train (or resume) the grid in `work`: its runs' folder, its best val less one val image, its epochs."""
    rows = run_sweep(sweep_file(work, "grid", space, fixed, "grid"), work / "runs", parallel)
    target = max(r["val"] for r in rows) - 1 / val_images(rows) - 1e-9  # one image below counts
    return work / "runs" / "grid", target, sum(r["epochs"] for r in rows)


def score(
    folder: Path,
    runs: Path,
    space: dict,
    fixed: dict,
    stop: dict | None,
    seeds: int,
    target: float,
    total: int,
) -> list[float]:
    """Each sampler seed's share of the grid's epochs to reach `target` (inf: never)."""
    return [
        fraction(replay(sweep_file(folder, f"bayes{s}", space, fixed, "bayes", s, stop), runs), target, total)
        for s in range(seeds)
    ]


def summary(fractions: list[float]) -> tuple[int, float]:
    """(seeds within 50%, median share): the first decides, the second breaks ties (lower is better)."""
    return sum(f <= 0.5 for f in fractions), statistics.median(fractions)


def share(f: float) -> str:
    return "–" if f == float("inf") else f"{f:.0%}"


def cells(fractions: list[float]) -> str:
    """A table row's cells: seeds within 50%, never, median, the goal's mean over seeds 0-2."""
    within, median = summary(fractions)
    never = sum(f == float("inf") for f in fractions)
    goal = statistics.mean(fractions[:3])
    return f"{within} of {len(fractions)} | {never} | {share(median)} | {share(goal)}"


def both_grids(work: Path, args: argparse.Namespace, space: dict, base: dict, console: Console) -> dict:
    """The tuning grid (training seed --tune-seed) and the judging grid (seed 0), trained or resumed:
    role → (fixed settings, runs, target val, total epochs)."""
    grids = {}
    for role, seed, folder in (
        ("tuning", args.tune_seed, work / f"grid-seed{args.tune_seed}"),
        ("judging", 0, args.judge_work or work / "grid-seed0"),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        fixed = base | {"seed": seed}
        runs, target, total = grid(folder, space, fixed, args.parallel)
        grids[role] = (fixed, runs, target, total)
        console.print(f"{role} grid (seed {seed}): {total} epochs, target val {target:.2%}")
    return grids


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of a trial run to the end")
    parser.add_argument("--space", choices=SPACES, default="wide")
    parser.add_argument("--tune-seed", type=int, default=1, help="the training seed of the tuning grid")
    parser.add_argument(
        "--judge-work", type=Path, help="tune_search.py's --work folder (its grid: seed 0); default: trained"
    )
    parser.add_argument("--replay", type=int, default=20, help="sampler seeds replayed per setting")
    parser.add_argument("--parallel", type=int, default=2, help="grid trials at once (one thread each)")
    parser.add_argument("--work", type=Path, help="folder for the tuning grid (default: temp); reruns resume")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "tune_pruner.md")
    parser.add_argument("--quick", action="store_true", help="smoke run (digits, 4 points, 4 epochs)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console, started = Console(), time.perf_counter()
    space, epochs = (QUICK_SPACE, 4) if args.quick else (SPACES[args.space], args.epochs)
    out = Path(tempfile.mkdtemp()) / "tune_pruner.md" if args.quick else args.out
    out.parent.mkdir(parents=True, exist_ok=True)  # before the grids: a bad --out fails now
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-tune-pruner-"))
    base = {"train.epochs": epochs, **FIXED} | (QUICK if args.quick else {})
    grids = both_grids(work, args, space, base, console)
    replays = work / "replay"
    replays.mkdir(exist_ok=True)
    candidates = settings(epochs)
    fixed, runs, target, total = grids["tuning"]
    tuned = {
        label: score(replays, runs, space, fixed, stop, args.replay, target, total)
        for label, stop in candidates.items()
    }
    best = max(tuned, key=lambda label: (summary(tuned[label])[0], -summary(tuned[label])[1]))
    default = f"min_iter {hyperband(epochs)['min_iter']}, eta 3"
    fixed, runs, target, total = grids["judging"]
    judged = {
        label: score(replays, runs, space, fixed, candidates[label], args.replay, target, total)
        for label in dict.fromkeys(["no pruner", default, best])
    }
    lines = [
        "# Hyperband's settings for a bayes sweep: chosen on one grid, judged on another",
        "",
        heading("tune_pruner.py", started, args.quick, epochs, space)
        + f" Each setting replayed over sampler seeds 0–{args.replay - 1} "
        "(`bench/tune_replay.py`); a seed reaches the grid's best val within one val image, and its share "
        "is the grid's epochs it spent until then.",
        "",
        f"## Tuning grid (training seed {args.tune_seed}): every setting",
        "",
        "| setting | seeds within 50% | never reached | median share | mean of seeds 0–2 |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {label}{' (chosen)' if label == best else ''} | {cells(f)} |" for label, f in tuned.items()),
        "",
        f"Chosen: **{best}** (most seeds within 50%, then the lowest median).",
        "",
        "## Judging grid (training seed 0, as bench/tune_search.md's grid)",
        "",
        "| setting | seeds within 50% | never reached | median share | mean of seeds 0–2 |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(f"| {label} | {cells(f)} |" for label, f in judged.items()),
        "",
        "Each seed's share on the judging grid (– never):",
        "",
        *(f"- {label}: {', '.join(share(f) for f in fs)}" for label, fs in judged.items()),
        "",
    ]
    out.write_text("\n".join(lines))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
