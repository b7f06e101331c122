"""Where `edgekit lr-find`'s suggestion ranks among a 12-point log-spaced lr grid, each point trained fully.

    python bench/tune.py                          # lenet_2k, lenet_small_dw, mobilenet_tiny on digits
    python bench/tune.py lenet_2k --parallel 2    # → bench/tune.md
    python bench/tune.py --bench fashion fashion/r2k fashion/r20k --parallel 1  # → bench/tune_fashion.md
    python bench/tune.py --bench fashion fashion/r2k --seeds 3   # every lr at seeds 0-2, ranked by mean val

For each recipe: the range test's rules (`Finding.rules()`: the suggestion, min loss / 10, and steepest
descent printed beside it), then the recipe trained at each rule's lr (a sweep of its own,
`<recipe>-rules`, so a rule added or moved trains only its own lr) and at each of 12 grid lrs (1e-3 … 1,
log-spaced) with everything else as shipped (seed 0; `--seeds N`: seeds 0..N-1, ranked by their mean
val). Each rule is ranked by val accuracy against the 12 grid lrs (test shown, not used): 1 + the grid
lrs strictly better, so ties share a rank. Goal: the suggestion within the best third of the grid (rank
≤ 4 of 13).
On **fashion** (Fashion-MNIST-1800, 270 val images) too-low lrs clearly lose, though from ~0.02 to 1 the
val of one seed per lr is flat within noise; on digits most lrs score 99–100% val and tie. `--epochs`
shortens every trial alike (the range test does not see epochs).
Trials run through `edgekit sweep` (grid over `train.optimizer.lr`), `--parallel` at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import ROOT, cpu
from frontier_dev import dev_accuracy
from rich.console import Console

from edgekit.train.lr_find import RULES

METRICS = ("val_acc", "test_acc", "dev_acc")
GRID = [float(f"{x:.3g}") for x in np.logspace(-3, 0, 12)]
# Each benchmark: its default recipes (LeNet, depthwise LeNet, MobileNet) and the overrides that put a
# recipe on its data (the fashion/ recipes already are; mobilenet_tiny gets Fashion's augmentation).
BENCHES: dict[str, tuple[list[str], dict]] = {
    "digits": (["lenet_2k", "lenet_small_dw", "mobilenet_tiny"], {}),
    "fashion": (
        ["fashion/r20k", "fashion/r2k", "mobilenet_tiny"],
        {
            "data.dataset": "fashion_mnist",
            "data.train_per_class": 180,
            "data.augment": {"hflip": True, "crop_padding": 2},
        },
    ),
}


def rank_for(
    recipe: str, fixed: dict, seeds: int, parallel: int, work: Path, console: Console, dev: bool = False
) -> tuple[list[str], str]:
    """The recipe's table rows (one per rule) and its val accuracy at every lr, the mean over `seeds`
    training seeds; `fixed`: key → value set on every trial and on the range tests (run as a user's
    `lr: auto` runs them: three, from the recipe's own seed, each rule's median)."""
    import edgekit.train  # noqa: F401  (binds the registries the recipe is validated against)
    from edgekit.orchestrate.sweep import Trial
    from edgekit.recipe import load
    from edgekit.train.lr_find import RangeParams, find_lr

    base = ROOT / "recipes" / f"{recipe}.yaml"
    fixed = {**fixed, "train.device": "cpu"}
    overrides = Trial("range-test", fixed).overrides()  # as the sweep will pass them to each trial
    found = find_lr(load(base, overrides), RangeParams())
    rules = {name: float(f"{lr:.3g}") for name, lr in found.rules().items()}  # rounded as lr: auto rounds
    name = recipe.replace("/", "-")
    # The grid and the rules' lrs are two sweeps, so that a rule added or moved trains only its own lr.
    rows = [
        row
        for sweep_name, lrs in ((name, GRID), (f"{name}-rules", sorted(set(rules.values()) - set(GRID))))
        if lrs
        for row in _trained(base, sweep_name, lrs, fixed, seeds, parallel, work, dev)
    ]
    by_lr = {  # lr → the mean over seeds of each metric
        lr: {m: float(np.mean([r[m] for r in rows if r["train.optimizer.lr"] == lr])) for m in METRICS}
        for lr in {r["train.optimizer.lr"] for r in rows}
    }
    best = max(GRID, key=lambda lr: by_lr[lr]["val_acc"])
    lines = []
    for name, lr in rules.items():
        # Ties share a rank (270 val images: many lrs score alike): 1 + the grid lrs strictly better.
        rank = 1 + sum(by_lr[g]["val_acc"] > by_lr[lr]["val_acc"] for g in GRID)
        on_dev = 1 + sum(by_lr[g]["dev_acc"] > by_lr[lr]["dev_acc"] for g in GRID)
        lines.append(
            f"| `{recipe}` | {name} | {lr:g} | {rank} of {len(GRID) + 1} "
            f"| {f'{on_dev} of {len(GRID) + 1}' if dev else '–'} | {by_lr[lr]['val_acc']:.2%} "
            f"| {by_lr[lr]['test_acc']:.2%} | {best:g} | {by_lr[best]['val_acc']:.2%} | "
            f"{'yes' if rank <= (len(GRID) + 1) // 3 else '**no**'} |"
        )
    marks = {lr: "**" for lr in rules.values()}  # the rules' lrs in bold
    curve = "; ".join(
        f"`{recipe}` {m[:3]} by lr: "
        + ", ".join(
            f"{marks.get(lr, '')}{lr:g}: {by_lr[lr][m]:.1%}{marks.get(lr, '')}" for lr in sorted(by_lr)
        )
        for m in ("val_acc", *(["dev_acc"] if dev else []))
    )
    console.print(*lines, sep="\n")
    return lines, curve


def _trained(
    base: Path, name: str, lrs: list[float], fixed: dict, seeds: int, parallel: int, work: Path, dev: bool
) -> list[dict]:
    """One row per trial of a grid sweep over `lrs` (× seeds) with `fixed` on every trial, trained
    `parallel` at a time in `work`/runs/`name`; on Fashion each row gains the trial's dev accuracy."""
    from edgekit.orchestrate import sweep_run

    sweep = {
        "recipe": str(base),
        "name": name,
        "method": "grid",
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {
            "train.optimizer.lr": {"values": lrs},
            **({"seed": {"values": list(range(seeds))}} if seeds > 1 else {}),
            **{k: {"value": v} for k, v in fixed.items()},
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    rows = sweep_run.run(path, work / "runs", Console(quiet=True), parallel=parallel)
    for r in rows:  # Fashion's 5,000-image dev set (bench/frontier_dev.py) beside the 270 val images
        r["dev_acc"] = dev_accuracy(work / "runs" / name / r["trial"]) if dev else math.nan
    return rows


def report(args: argparse.Namespace, ranked: list[tuple[list[str], str]], minutes: float) -> str:
    """The Markdown report: how it was run, one table row per recipe and rule, each recipe's curves."""
    rows, curves = zip(*ranked, strict=True)
    suggestion, other = list(RULES)
    dev = args.bench == "fashion"
    lines = [
        "# lr-find's suggestion against a trained lr grid",
        "",
        f"`python bench/tune.py {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d')}, {cpu()}, "
        f"{minutes:.0f} min. Grid: {', '.join(f'{x:g}' for x in GRID)}; each lr "
        f"trained with {f'{args.epochs} epochs' if args.epochs else 'the recipe’s epochs'}, "
        f"{f'seeds 0–{args.seeds - 1}' if args.seeds > 1 else 'seed 0'}, {args.bench}; ranked by "
        f"{'mean ' if args.seeds > 1 else ''}val accuracy (test shown, not used)"
        + (
            ", and by the 5,000-image dev set of Fashion training images no run trains on "
            "(bench/frontier_dev.py), which foresees test far better than 270 val images do"
            if dev
            else ""
        )
        + ". The range test runs 3 times, at the recipe's seed and the next two; each rule takes the median.",
        "",
        f"The suggestion is `{suggestion}`; `{other}` is the rule lr-find prints beside it.",
        "",
        "| recipe | rule | its lr | its rank by val | by dev | its val | its test | best grid lr | its val "
        "| in the best third (val) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *(line for lines in rows for line in lines),
        "",
        *(f"- {c}" for c in curves),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "recipes", nargs="*", help="default: the benchmark's LeNet, depthwise LeNet and MobileNet"
    )
    parser.add_argument("--bench", choices=BENCHES, default="digits")
    parser.add_argument("--epochs", type=int, help="every trial's epochs (default: each recipe's)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="train every lr at seeds 0..N-1 and rank by the mean val"
    )
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, help="the report (default: bench/tune.md, bench/tune_<bench>.md)")
    parser.add_argument(
        "--work", type=Path, help="the trials' folder, kept: a rerun resumes (default: temporary)"
    )
    args = parser.parse_args()
    out = args.out or ROOT / "bench" / ("tune.md" if args.bench == "digits" else f"tune_{args.bench}.md")
    out.parent.mkdir(parents=True, exist_ok=True)  # before the trials: a bad --out fails now, not later
    defaults, fixed = BENCHES[args.bench]
    fixed = {**fixed, **({"train.epochs": args.epochs} if args.epochs else {})}
    console = Console()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-tune-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dev = args.bench == "fashion"
        ranked = [
            rank_for(r, fixed, args.seeds, args.parallel, work, console, dev)
            for r in args.recipes or defaults
        ]
    out.write_text(report(args, ranked, (time.perf_counter() - started) / 60))
    console.print(json.dumps({"wrote": str(out)}))


if __name__ == "__main__":
    main()
