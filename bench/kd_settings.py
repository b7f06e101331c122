"""Distillation settings for a Fashion rung, each against the shipped `_kd` recipe and against alone, on dev.

    python bench/kd_settings.py --work runs/select_study --rung r2k --seeds 0,1,2,3,4 \\
        --variants "dist=distill.method=dist;a09t4=distill.alpha=0.9,distill.temperature=4"

Every run is trained as bench/select_epoch.py trains it (`--jobs` at a time, one thread each, into
`--work`, kept between calls, so the shipped `<rung>` and `<rung>_kd` runs of that study are reused) and
scored with its last epoch's EMA weights, the epoch the ladder keeps (`train.select: last`), on the
5,000-image dev set (bench/frontier_dev.py) and on the official 10,000 test images. A variant is
`<label>=<override>,<override>` applied to `recipes/fashion/<rung>_kd.yaml`; `--alone-variants` are applied
to `<rung>.yaml` (training alone), so a change that is not distillation's (say, augmentation) is
measured without the teacher too.

The rule, fixed before any variant's run finished: each variant is trained for seeds 0-4; the one with
the highest mean dev, if above the shipped `_kd` recipe's, is trained for seeds 5-9 too, and replaces
the shipped settings if its paired dev difference over the 10 seeds has a 95% t interval above zero.
The variants, also fixed then: `dist` (DIST, T 1), `a09t4` (hinton alpha 0.9, T 4), `a1t2` (hinton alpha
1: no labels), `dkd` (T 4), and heavier crops for the distilled student (`crop4`: padding 4, where the
teacher's soft labels stay right for views that labels fit worse; Beyer et al.), the latter beside the
same crops alone so that what augmentation does alone is not credited to distillation.
Added after the first four had lost to the shipped settings (seeds 0-4), before `crop4` finished: a
patient schedule (`e1200`: 1,200 epochs, the ladder's r2k has 600; Beyer et al.), distilled and alone.
Test is reported, never used to choose. "Recovery" is (distilled − alone) / (teacher − alone) on test,
the frontier goal's measure (bench/frontier.md), with the teacher's test accuracy from the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT, cpu
from frontier_dev import bench_split
from frontier_report import interval, paired
from rich.console import Console
from select_epoch import scores, train

from edgekit.runs import Run


def parse_variants(spec: str) -> dict[str, tuple[str, ...]]:
    """`a=k=v,k=v;b=k=v` → {"a": ("k=v", "k=v"), "b": ("k=v",)}."""
    variants = {}
    for item in filter(None, spec.split(";")):
        label, _, overrides = item.partition("=")
        variants[label.strip()] = tuple(o.strip() for o in overrides.split(",") if o.strip())
    return variants


def row(name: str, runs: list[dict], shipped: list[dict] | None, alone: list[dict], teacher: float) -> str:
    """One table row; Δ dev against `shipped` (the recipe the variant changes; None: this is it)."""
    dev = [r["last_dev"] for r in runs]
    test = [r["last_test"] for r in runs]
    alone_test = statistics.mean(r["last_test"] for r in alone)
    vs_shipped = interval(paired([r["last_dev"] for r in shipped], dev)) if shipped else "–"
    vs_alone = paired([r["last_test"] for r in alone], test)
    recovery = (statistics.mean(test) - alone_test) / (teacher - alone_test)
    return (
        f"| {name} | {len(runs)} | {statistics.mean(dev):.2%} | {vs_shipped} "
        f"| {statistics.mean(test):.2%} | {interval(vs_alone)} | {recovery:.0%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rung", default="r2k")
    parser.add_argument("--variants", default="", help="label=override,override;label=...")
    parser.add_argument("--alone-variants", default="", help="the same, applied to the rung alone")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "kd_settings.md")
    args = parser.parse_args()
    console, started = Console(), time.perf_counter()
    seeds, kd = [int(s) for s in args.seeds.split(",")], f"{args.rung}_kd"
    # (recipe, label, overrides) per variant, distilled first; the two shipped recipes lead
    variants = [(args.rung, "", ()), (kd, "", ())]
    variants += [(kd, label, o) for label, o in parse_variants(args.variants).items()]
    variants += [(args.rung, label, o) for label, o in parse_variants(args.alone_variants).items()]
    jobs = [(recipe, s, o, f"-{label}" if label else "") for recipe, label, o in variants for s in seeds]
    args.work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        folders = list(pool.map(lambda j: train(*j[:2], args.work, *j[2:]), jobs))
    test = bench_split().test
    scored = [scores(f, test, kept=("last",)) for f in folders]  # the ladder keeps the last epoch
    n = len(seeds)
    alone, shipped = scored[:n], scored[n : 2 * n]
    teacher = Run(folders[n]).summary()["distill"]["teacher_test_acc"]
    lines = [
        f"# Distillation settings for `fashion/{kd}`",
        "",
        f"`python bench/kd_settings.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d')}, {cpu()}, "
        f"{(time.perf_counter() - started) / 60:.0f} min (runs already in the work folder are not trained "
        f"again). Fashion-MNIST-1800, seeds {args.seeds}, each run's last epoch (EMA weights). Dev: 5,000 "
        "Fashion training images no run trains on, used to choose; test: the official 10,000, reported. "
        f"Teacher (the runs' ensemble) {teacher:.2%} test. Intervals: paired by seed, points, 95% t.",
        "",
        "| runs | n | dev | Δ dev vs the recipe it changes | test | Δ test vs alone | recovery of the gap |",
        "| --- | ---: | ---: | --- | ---: | --- | ---: |",
        row(f"`fashion/{args.rung}` alone", alone, None, alone, teacher),
        row(f"`fashion/{kd}` as shipped", shipped, None, alone, teacher),
    ]
    for i, (recipe, label, overrides) in enumerate(variants[2:], start=2):
        runs = scored[i * n : (i + 1) * n]
        base = shipped if recipe == kd else alone
        lines.append(row(f"{label} (`{recipe}` {' '.join(overrides)})", runs, base, alone, teacher))
    for line in lines[-len(variants) :]:
        console.print(line, highlight=False, markup=False)
    args.out.write_text("\n".join(lines) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
