"""How far lr-find's suggestion moves from seed to seed: one range test against the median of three.

    python bench/lr_find_spread.py                  # → bench/lr_find_spread.md
    python bench/lr_find_spread.py --seeds 6 --bench fashion fashion/r2k

For each recipe the range test runs at seeds 0..N-1 (initial weights and batch order; the data split is
the recipe's). The median of three (what `edgekit lr-find` and `lr: auto` report) takes seeds 0–2, 3–5,
…, set against as many single tests, at seeds 0, 3, …. Nothing is trained: this measures the
suggestion's spread, not its quality (bench/tune.py ranks it against a trained grid).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import ROOT, cpu
from tune import BENCHES

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.orchestrate.sweep import Trial
from edgekit.recipe import load
from edgekit.train.lr_find import Finding, RangeParams, range_test

REPEATS = RangeParams().repeats


def spread(lrs: list[float]) -> str:
    return f"{min(lrs):.3g}–{max(lrs):.3g} (×{max(lrs) / min(lrs):.1f})"


def measure(recipe: str, fixed: dict, seeds: int) -> str:
    """The recipe's table row, with the seconds one range test took."""
    overrides = Trial("range-test", {**fixed, "train.device": "cpu"}).overrides()
    started = time.perf_counter()
    tests = [
        range_test(load(ROOT / "recipes" / f"{recipe}.yaml", [*overrides, f"seed={s}"])) for s in range(seeds)
    ]
    each = (time.perf_counter() - started) / seeds
    medians = [Finding(tests[i : i + REPEATS]) for i in range(0, seeds, REPEATS)]
    singles = tests[::REPEATS]  # as many single tests as medians: a range widens with its sample
    cells = [
        f"`{recipe}`",
        spread([t.steepest() for t in singles]),
        spread([m.rule("steepest") for m in medians]),
        spread([t.min_loss_tenth() for t in singles]),
        spread([m.rule("min loss / 10") for m in medians]),
        spread([t.steepest() for t in tests]),
        f"{each:.0f} s",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="*", help="default: the benchmark's three recipes")
    parser.add_argument("--bench", choices=BENCHES, action="append", help="digits, fashion (default: both)")
    parser.add_argument("--seeds", type=int, default=9, help=f"a multiple of {REPEATS}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "lr_find_spread.md")
    args = parser.parse_args()
    if args.seeds < REPEATS or args.seeds % REPEATS:
        parser.error(f"--seeds {args.seeds}: give a multiple of {REPEATS}")
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the tests: a bad --out fails now
    started, rows = time.perf_counter(), []
    for bench in args.bench or list(BENCHES):
        defaults, fixed = BENCHES[bench]
        for recipe in args.recipes or defaults:
            row = measure(recipe, fixed, args.seeds)
            print(bench, row, flush=True)
            rows.append(f"| {bench} {row}")
    lines = [
        "# lr-find's suggestion from seed to seed",
        "",
        f"`python bench/lr_find_spread.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d')}, {cpu()}, "
        f"{(time.perf_counter() - started) / 60:.0f} min. Range test as shipped (1e-6 → 10, 200 steps), "
        f"seeds 0–{args.seeds - 1}: one test at seeds 0, 3, 6, … against the median of {REPEATS} at seeds "
        "0–2, 3–5, … (as many of each); lowest–highest suggestion and their ratio. The last column: every "
        "seed's single test. Nothing is trained.",
        "",
        "| bench | recipe | steepest, one test | steepest, median of 3 | min loss / 10, one test "
        "| min loss / 10, median of 3 | steepest, all single tests | one test took |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: |",
        *rows,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
