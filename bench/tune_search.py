"""Grid against bayes + hyperband on one search space: the training epochs each spends to find the grid's
best val accuracy.

    python bench/tune_search.py             # Fashion-MNIST-1800, fashion/r2k → bench/tune_search.md
    python bench/tune_search.py --quick     # smoke run: digits, a 4-point space, 4 epochs, temp folder

The space is categorical (lr × weight decay × width), so a grid covers it; every trial is `fashion/r2k`
shortened to `--epochs` with seed 0, through `edgekit sweep` one trial at a time (so the order of the
trials and the epochs each ran are exact, and every trial of a point gives the same val accuracy). The
grid trains every point to the end. Bayes (Optuna's TPE) with `early_terminate: hyperband` runs as many
trials as the grid has points, once per sampler seed; `--replay N` replays seeds 0..N-1 from the grid's
runs in seconds (bench/tune_replay.py), checked against the seeds trained for real. Reached: the first
trial after which the best finished trial's val accuracy is within one val image of the grid's best; its
cost: the epochs all trials had run by then, pruned ones included. Goal: ≤ 50% of the grid's epochs, mean
over 3 sampler seeds.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, cpu
from rich.console import Console

SPACES = {
    # A user's first search: the lr over two and a half decades (too low was their costliest mistake),
    # weight decay over two, the net's width: bad regions exist, and hyperband can see them early.
    "wide": {
        "train.optimizer.lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
        "train.optimizer.weight_decay": [5e-5, 5e-4, 5e-3],
        "model.width": [0.5, 0.75, 1.0],
    },
    # Around the shipped recipe: 22 of its 24 points lie within 16 val images of each other.
    "narrow": {
        "train.optimizer.lr": [0.02, 0.05, 0.1, 0.3],
        "train.optimizer.weight_decay": [5e-5, 5e-4, 5e-3],
        "model.width": [0.75, 1.0],
    },
}
QUICK_SPACE = {"train.optimizer.lr": [0.01, 0.3], "model.width": [0.5, 1.0]}
QUICK = {"data.dataset": "digits", "data.train_per_class": None}
# Every trial trains without the ladder's EMA (fashion/base.yaml), as the committed results were measured
# before it was adopted (and before hyperband judged an EMA trial by its raw weights, docs/sweeps.md).
FIXED = {"train.device": "cpu", "train.ema": None}


def hyperband(epochs: int, min_iter: int | None = None, eta: int = 3) -> dict:
    """wandb's early_terminate for trials of `epochs`; min_iter defaults to a tenth of them."""
    return {"type": "hyperband", "min_iter": min_iter or max(1, epochs // 10), "eta": eta, "max_iter": epochs}


def sweep_file(
    work: Path, name: str, space: dict, fixed: dict, method: str, seed=0, stop: dict | None = None
) -> Path:
    """A sweep over `space` in wandb's format; bayes gets as many trials as the grid has points, and
    `stop` (wandb's early_terminate, e.g. `hyperband(60)`) when given."""
    spec = {
        "recipe": str(ROOT / "recipes" / "fashion" / "r2k.yaml"),
        "name": name,
        "method": method,
        "metric": {"name": "val_acc", "goal": "maximize"},
        "parameters": {k: {"values": v} for k, v in space.items()}
        | {k: {"value": v} for k, v in fixed.items()},
    }
    if method == "bayes":
        points = len(list(itertools.product(*space.values())))
        spec |= {"count": points, "sampler_seed": seed} | ({"early_terminate": stop} if stop else {})
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def trials(sweep_dir: Path) -> list[dict]:
    """The sweep's trials in the order they ran: epochs run, final val (None when pruned)."""
    from edgekit.orchestrate.bayes import curve
    from edgekit.orchestrate.sweep import PRUNED_FILE
    from edgekit.runs import Run

    out = []
    for folder in sorted(p for p in sweep_dir.iterdir() if (p / "recipe.yaml").is_file()):
        ran = max(curve(folder, "val_acc"), default=0)
        pruned = (folder / PRUNED_FILE).is_file()
        val = None if pruned else (Run(folder).summary() or {}).get("val_acc")
        out.append({"name": folder.name, "folder": folder, "epochs": ran, "val": val, "pruned": pruned})
    return out


def reached(rows: list[dict], target: float) -> tuple[int | None, int]:
    """(1-based trial after which the best finished val ≥ target, epochs spent up to it); (None, all)."""
    spent, best = 0, 0.0
    for i, r in enumerate(rows, 1):
        spent += r["epochs"]
        best = max(best, r["val"] or 0.0)
        if best >= target:
            return i, spent
    return None, spent


def val_images(rows: list[dict]) -> int:
    """How many val images the trials scored (one image is the step of "within one val image")."""
    from edgekit.data import prepare_for
    from edgekit.runs import Run

    return len(prepare_for(Run(rows[0]["folder"]).recipe()).val[1])


def fraction(rows: list[dict], target: float, grid_epochs: int) -> float:
    """The share of the grid's epochs a search spent to reach `target` (inf: it never did)."""
    at, spent = reached(rows, target)
    return spent / grid_epochs if at else float("inf")


def replays(
    work: Path, space, fixed, epochs, n, real: dict, grid_epochs: int, target: float
) -> tuple[list[str], list[float]]:
    """The report's lines on `n` sampler seeds replayed from the grid's runs (bench/tune_replay.py), after
    checking the replay against the real sweeps: the same trials in the same order, pruned alike; and each
    seed's fraction of the grid's epochs to reach its best (inf: never; [] when the replay disagrees)."""
    from tune_replay import replay

    if n <= 0:
        return [], []
    folder = work / "replay"
    folder.mkdir(exist_ok=True)
    seeds = sorted({*range(n), *real})
    runs = {
        s: replay(
            sweep_file(folder, f"bayes{s}", space, fixed, "bayes", s, hyperband(epochs)),
            work / "runs" / "grid",
        )
        for s in seeds
    }
    agree = all(
        [(r["name"], r["pruned"]) for r in runs[s]] == [(r["name"], r["pruned"]) for r in found]
        for s, found in real.items()
    )
    fractions = [fraction(runs[s], target, grid_epochs) for s in range(n)]
    median = statistics.median(fractions)
    cells = ", ".join("–" if f == float("inf") else f"{f:.0%}" for f in fractions)
    return [
        f"## {n} sampler seeds, replayed",
        "",
        f"Replayed from the grid's runs (`bench/tune_replay.py`: the same TPE proposals and hyperband "
        f"decisions without training; it {'agrees' if agree else '**does not agree**'} with the real "
        f"sweeps above, trial by trial). Seeds 0–{n - 1}, fraction of the grid's epochs to reach its best "
        f"(– never, within the trials): {cells}.",
        "",
        f"Within 50%: {sum(f <= 0.5 for f in fractions)} of {n} seeds; never reached: "
        f"{sum(f == float('inf') for f in fractions)}; median "
        + ("–" if median == float("inf") else f"{median:.0%}")
        + ". A pruned trial's epochs here stop where it was pruned; a real sweep's run one or two more "
        "before the process is stopped.",
        "",
    ], fractions if agree else []  # a replay that disagrees with the real sweeps stands in for none


def heading(script: str, started: float, quick: bool, epochs: int, space: dict) -> str:
    """A tune report's opening: the command, date, CPU, minutes, data, trial length and space."""
    points = " × ".join(f"{k} {v}" for k, v in space.items())
    return (
        f"`python bench/{script} {' '.join(sys.argv[1:])}` — {time.strftime('%Y-%m-%d')}, {cpu()}, "
        f"{(time.perf_counter() - started) / 60:.0f} min. "
        f"{'digits (quick)' if quick else 'Fashion-MNIST-1800'}, `fashion/r2k` at {epochs} epochs. "
        f"Space: {points}."
    )


def run_sweep(path: Path, runs: Path, parallel: int = 1) -> list[dict]:
    """Run (or resume) the sweep at `path`; a bayes sweep's order depends on one trial at a time, a grid's
    results do not (each trial is deterministic), so a grid may take `parallel` at once."""
    import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
    from edgekit.orchestrate import sweep_run

    sweep_run.run(path, runs, Console(quiet=True), parallel=parallel)
    return trials(runs / yaml.safe_load(path.read_text())["name"])


def bayes_rows(
    work: Path,
    space: dict,
    fixed: dict,
    epochs: int,
    seeds: list[int],
    target: float,
    grid_epochs: int,
    console,
) -> tuple[list[str], dict[int, list[dict]]]:
    """One table row per TPE sampler seed (bayes + hyperband, trained here), and each seed's trials."""
    rows, real = [], {}
    for seed in seeds:
        path = sweep_file(work, f"bayes{seed}", space, fixed, "bayes", seed, hyperband(epochs))
        found = real[seed] = run_sweep(path, work / "runs")
        at, spent = reached(found, target)
        best = max((r["val"] or 0.0) for r in found)
        pruned = sum(r["pruned"] for r in found)
        cells = [f"{at}", f"{spent}", f"{spent / grid_epochs:.0%}"] if at else ["not reached", "–", "–"]
        line = (
            f"| bayes + hyperband | {seed} | {len(found)} ({pruned}) | {sum(r['epochs'] for r in found)} "
            f"| {best:.2%} | " + " | ".join(cells) + " |"
        )
        console.print(line, highlight=False)
        rows.append(line)
    return rows, real


def verdict_line(trained: dict[int, float], by_seed: list[float]) -> str:
    """The goal's line: the mean share of the grid's epochs over sampler seeds 0-2, each as trained here or
    else replayed (without a replay: the seeds trained here), and the odds three random seeds all make it."""
    known = trained | dict(enumerate(by_seed))
    goal = {s: trained.get(s, known[s]) for s in range(3) if s in known} if by_seed else trained
    mean = statistics.mean(goal.values())
    verdict = "met" if mean <= 0.5 else "**not met**"
    how = ", ".join(f"{s}: {'never' if f == float('inf') else f'{f:.0%}'}" for s, f in goal.items())
    risk = ""
    if by_seed:
        reach = sum(f <= 0.5 for f in by_seed) / len(by_seed)
        risk = (
            f" Over the {len(by_seed)} replayed seeds {reach:.0%} reach it within 50%, so three seeds "
            f"drawn at random all do with probability about {reach**3:.0%}."
        )
    seeds_trained = [s for s in goal if s in trained]
    return (
        f"Goal (≤ 50% of the grid's epochs, mean over sampler seeds {', '.join(map(str, goal))}; trained: "
        f"{', '.join(map(str, seeds_trained)) or 'none'}, the rest replayed): {verdict} — "
        + (f"{mean:.0%}" if mean != float("inf") else "a seed never reached the grid's best")
        + f" ({how}).{risk}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs of a trial run to the end")
    parser.add_argument("--seeds", default="0,1,2", help="TPE sampler seeds")
    parser.add_argument(
        "--replay", type=int, default=20, help="sampler seeds 0..N-1 replayed from the grid's runs"
    )
    parser.add_argument("--space", choices=SPACES, default="wide", help="the search space (see SPACES)")
    parser.add_argument("--quick", action="store_true", help="smoke run (digits, 4 points, 4 epochs)")
    parser.add_argument("--work", type=Path, help="folder for the sweeps (default: temp); reruns resume them")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console()
    started = time.perf_counter()
    space, epochs = (QUICK_SPACE, 4) if args.quick else (SPACES[args.space], args.epochs)
    fixed = {"train.epochs": epochs, **FIXED, "seed": 0}
    if args.quick:
        fixed |= QUICK
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-tune-search-"))
    work.mkdir(parents=True, exist_ok=True)
    grid = run_sweep(sweep_file(work, "grid", space, fixed, "grid"), work / "runs")
    n_val = val_images(grid)
    grid_epochs, grid_best = sum(r["epochs"] for r in grid), max(r["val"] for r in grid)
    # "Within one val image": a trial one image below the best counts (the tolerance is for float error).
    target = grid_best - 1 / n_val - 1e-9
    console.print(f"grid: {len(grid)} trials, {grid_epochs} epochs, best val {grid_best:.2%}")
    rows = [
        f"| grid | – | {len(grid)} (0) | {grid_epochs} | {grid_best:.2%} | {len(grid)} "
        f"| {grid_epochs} | 100% |"
    ]
    seeds = [int(s) for s in args.seeds.split(",")]
    bayes, real = bayes_rows(work, space, fixed, epochs, seeds, target, grid_epochs, console)
    replayed, by_seed = replays(work, space, fixed, epochs, args.replay, real, grid_epochs, target)
    trained = {s: fraction(found, target, grid_epochs) for s, found in real.items()}
    lines = [
        "# Grid against bayes + hyperband: epochs to the grid's best val accuracy",
        "",
        heading("tune_search.py", started, args.quick, epochs, space)
        + f" Seed 0, one trial at a time. Hyperband: min_iter {hyperband(epochs)['min_iter']}, eta 3. "
        f"Reached: best finished val within one val image (1/{n_val}) of the grid's best.",
        "",
        "| search | sampler seed | trials (pruned) | epochs run | best val | reached at trial "
        "| epochs to reach | of the grid's epochs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        *bayes,
        "",
        "A grid knows its best only after all its points, so its row counts them all. TPE's first "
        "trials are random draws (a seed may hit the best point at once); pruned trials count the epochs "
        "they ran before the pruner stopped them.",
        "",
        verdict_line(trained, by_seed),
        "",
        *replayed,
    ]
    name = "tune_search.md" if args.space == "wide" else f"tune_search_{args.space}.md"
    out = work / name if args.quick else ROOT / "bench" / name
    out.write_text("\n".join(lines))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
