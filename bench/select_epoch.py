"""Which epoch to keep: the best by val (270 images) or the last, scored on Fashion's 5,000-image dev set.

    python bench/select_epoch.py --work runs/select_study            # r2k, r5k, r1k × seeds 0-9, alone
    python bench/select_epoch.py --rungs r2k --seeds 0,1 --work /tmp/s  # a smaller study
    python bench/select_epoch.py --work runs/select_study --extra runs/tune_fashion_v2/runs  # + scored only
    python bench/select_epoch.py --work runs/select_study --shown r2k_kd   # + the distilled r2k, shown only

Each Fashion-MNIST-1800 rung is trained alone as shipped (EMA, `train.select=best`), `--jobs` at a time
with one thread each; one training gives both candidates, so the comparison is paired within a run:
`best.pt` (the epoch with the best val) against the final epoch's weights (the EMA's, from `last.pt`).
Both are scored on the dev set (bench/frontier_dev.py: training images no run sees) and on the official
10,000 test images. The rule, fixed before the first run finished: adopt `train.select: last` for
`recipes/fashion/base.yaml` if the pooled paired dev difference (last − best) has a 95% t interval above
zero. Test is reported, never used. `--shown RUNGS`: more `recipes/fashion/` recipes trained and scored
the same way, shown beside the rule's rungs but not pooled into it (`r2k_kd` needs its teacher runs).
`--extra DIR`: every run folder under DIR scored the same way, shown beside (not part of the rule). Runs
in `--work` are kept: a rerun scores them without training again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, cpu
from frontier_dev import bench_split, dev_set
from frontier_report import interval, paired
from rich.console import Console

from edgekit.models import from_checkpoint
from edgekit.prune.prune import accuracy
from edgekit.runs import Run, load_checkpoint


def train(rung: str, seed: int, work: Path, overrides: tuple[str, ...] = (), label: str = "") -> Path:
    """`edgekit train recipes/fashion/<rung>.yaml seed=<seed> [overrides]` into work/<rung><label>-s<seed>
    (kept if finished): `label` names the overrides, so each variant has its own folder."""
    name = f"{rung}{label}-s{seed}"
    folder = work / name
    if (Run(folder).summary() or {}).get("test_acc") is None:
        command = [
            sys.executable,
            "-m",
            "edgekit",
            "train",
            str(ROOT / "recipes" / "fashion" / f"{rung}.yaml"),
        ]
        overrides = [*overrides, f"seed={seed}", f"name={name}", "train.select=best", "train.device=cpu"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with (work / f"{name}.log").open("w") as log:
            subprocess.run(
                [*command, *overrides, "track.wandb=disabled", "--runs-dir", str(work)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                check=True,
            )
    return folder


def scores(folder: Path, test, kept: tuple[str, ...] = ("best", "last")) -> dict[str, float]:
    """Dev and test accuracy of best.pt ("best") and of the final epoch's weights ("last": the EMA's when
    there is one), for each one in `kept`."""
    best = load_checkpoint(folder / "best.pt")
    last = load_checkpoint(folder / "last.pt")
    model = from_checkpoint(best, folder / "best.pt")
    out = {"best_epoch": best["best_epoch"], "epochs": last["epoch"]}
    weights = {"best": best["model"], "last": _final_weights(last)}
    for name in kept:
        model.load_state_dict(weights[name])
        out[f"{name}_dev"] = accuracy(model, dev_set(), best["mean"], best["std"])
        out[f"{name}_test"] = accuracy(model, test, best["mean"], best["std"])
    return out


def _final_weights(last: dict) -> dict:
    ema = last.get("ema")
    if not ema:
        return last["model"]
    return {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}


def table(groups: dict[str, list[dict]], console: Console) -> list[str]:
    lines = [
        "| runs | n | dev: best-val epoch | dev: last epoch | Δ dev [95% CI] | test: best / last | Δ test "
        "| best epoch (median) |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | ---: |",
    ]
    for name, rows in groups.items():
        d = paired([r["best_dev"] for r in rows], [r["last_dev"] for r in rows])
        t = paired([r["best_test"] for r in rows], [r["last_test"] for r in rows])
        lines.append(
            f"| {name} | {len(rows)} | {_mean(rows, 'best_dev'):.2%} | {_mean(rows, 'last_dev'):.2%} | "
            f"{interval(d)} | {_mean(rows, 'best_test'):.2%} / {_mean(rows, 'last_test'):.2%} | "
            f"{interval(t)} | "
            f"{_median_epoch(rows)} |"
        )
        console.print(lines[-1], highlight=False)
    return lines


def versus(shown: list[str], rungs: list[str], seeds: list[int], scored: dict) -> list[str]:
    """Each shown `<rung>_kd` against its `<rung>` alone, paired by seed, under either epoch choice."""
    lines = []
    for kd in (r for r in shown if r.removesuffix("_kd") in rungs and r != r.removesuffix("_kd")):
        alone = kd.removesuffix("_kd")
        cells = []
        for kept in ("best", "last"):
            for split in ("dev", "test"):
                a = [scored[(alone, s)][f"{kept}_{split}"] for s in seeds]
                b = [scored[(kd, s)][f"{kept}_{split}"] for s in seeds]
                cells.append(interval(paired(a, b)))
        lines += [
            f"`fashion/{kd}` − `fashion/{alone}`, paired by seed (points, 95% t interval):",
            "",
            "| epoch kept | Δ dev | Δ test |",
            "| --- | --- | --- |",
            f"| best val | {cells[0]} | {cells[1]} |",
            f"| last | {cells[2]} | {cells[3]} |",
            "",
        ]
    return lines


def _median_epoch(rows: list[dict]) -> str:
    """The median best-val epoch, "of" the runs' length when they share one."""
    median = sorted(r["best_epoch"] for r in rows)[len(rows) // 2]
    lengths = {r["epochs"] for r in rows}
    return f"{median} of {lengths.pop()}" if len(lengths) == 1 else "–"


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default="r2k,r5k,r1k")
    parser.add_argument("--shown", default="", help="more fashion/ recipes, shown but outside the rule")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="the runs' folder, kept between calls")
    parser.add_argument("--extra", type=Path, help="also score every run folder under this one (shown only)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "select_epoch.md")
    args = parser.parse_args()
    console, started = Console(), time.perf_counter()
    rungs, seeds = args.rungs.split(","), [int(s) for s in args.seeds.split(",")]
    shown = [r for r in args.shown.split(",") if r]
    args.work.mkdir(parents=True, exist_ok=True)
    pairs = [(r, s) for s in seeds for r in rungs + shown]
    with ThreadPoolExecutor(args.jobs) as pool:
        folders = list(pool.map(lambda p: train(*p, args.work), pairs))
    test = bench_split().test
    scored = {p: scores(f, test) for p, f in zip(pairs, folders, strict=True)}
    groups = {f"`fashion/{r}`": [scored[(r, s)] for s in seeds] for r in rungs}
    ruled = [scored[(r, s)] for r in rungs for s in seeds]
    groups[f"**pooled** ({', '.join(rungs)})"] = ruled
    groups |= {f"`fashion/{r}` (shown, not in the rule)": [scored[(r, s)] for s in seeds] for r in shown}
    pooled = paired([r["best_dev"] for r in ruled], [r["last_dev"] for r in ruled])
    lines = [
        "# Which epoch to keep: the best by val, or the last",
        "",
        f"`python bench/select_epoch.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d')}, {cpu()}, "
        f"{(time.perf_counter() - started) / 60:.0f} min (runs already in the work folder are not trained "
        "again). Fashion-MNIST-1800, each rung trained alone as shipped (EMA 0.999), seeds "
        f"{args.seeds}; paired within each run: `best.pt` (the best of its 270 val images' epochs) against "
        "the final epoch's EMA weights; Δ = last − best, points, 95% t interval. Dev: 5,000 Fashion "
        "training images no run trains on (bench/frontier_dev.py). Test: the official 10,000, not used.",
        "",
        *table(groups, console),
        "",
        "Rule, fixed before the first run finished: adopt `train.select: last` for "
        "`recipes/fashion/base.yaml` if the pooled Δ dev interval lies above zero. "
        + (
            f"It does ({interval(pooled)}): **adopted**."
            if pooled[1] > 0
            else f"It does not ({interval(pooled)}): not adopted."
        ),
        "",
    ]
    lines += versus(shown, rungs, seeds, scored)
    if args.extra:
        extra = [f for f in sorted(args.extra.glob("*/*")) if (f / "last.pt").is_file()]
        by_parent: dict[str, list[dict]] = {}
        for f in extra:
            by_parent.setdefault(f"`{f.parent.name}` (under {args.extra})", []).append(scores(f, test))
        lines += [
            "Scored only (not part of the rule): every run under `--extra`.",
            "",
            *table(by_parent, console),
            "",
        ]
    args.out.write_text("\n".join(lines))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
