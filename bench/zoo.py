"""Train every shipped recipe on digits and tabulate parameters, MACs and test accuracy.

    python bench/zoo.py                       # all recipes in recipes/, 1 seed, writes bench/zoo.md
    python bench/zoo.py --seeds 0,1,2 lenet_2k lenet_1k

Each recipe is trained exactly as `edgekit train recipes/<name>.yaml seed=<s>` would (same code path),
in a temporary runs folder, and its summary.json is read back. Test accuracy is on the held-out test
split (270 images for digits: one image is 0.37 points), so differences under ~1.5 points are noise.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"base"}  # shared defaults, not a rung of the ladder


def train(recipe: Path, seed: int, runs: Path, overrides: list[str]) -> dict:
    import json

    from edgekit.train import run

    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    run_dir = run.start(recipe, [f"seed={seed}", "track.wandb=disabled", *overrides], runs, quiet)
    return json.loads((run_dir / "summary.json").read_text())


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values):.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipe names (default: all in recipes/)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo.md")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every recipe"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.names or [p.stem for p in sorted((ROOT / "recipes").glob("*.yaml")) if p.stem not in SKIP]
    rows, console = [], Console()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            started = time.perf_counter()
            runs = [train(ROOT / "recipes" / f"{name}.yaml", s, Path(tmp) / str(s), args.set) for s in seeds]
            first = runs[0]
            row = (
                f"| `{name}` | {first['params']:,} | {first['macs']:,} | {first['epochs']} | "
                f"{fmt([r['val_acc'] for r in runs])} | {fmt([r['test_acc'] for r in runs])} | "
                f"{(time.perf_counter() - started) / len(seeds):.0f} s |"
            )
            console.print(row, highlight=False)
            rows.append(row)
    command = " ".join(
        ["python bench/zoo.py", *args.names]
        + (["--seeds", args.seeds] if args.seeds != "0" else [])
        + (["--set", *args.set] if args.set else [])
        + ([f"--out {args.out.name}"] if args.set else [])
    )
    data = next((o.split("=", 1)[1] for o in args.set if o.startswith("data.dataset=")), "digits")
    header = [
        "| recipe | params | MACs | epochs | val acc (best epoch) | test acc | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    text = "\n".join(
        [
            f"# Shipped recipes on {data}",
            "",
            f"`{command}` — {time.strftime('%Y-%m-%d')}, CPU (2 cores), seeds {seeds}."
            + (" Test split: 270 images (one image = 0.37 points)." if data == "digits" else ""),
            "",
            *header,
            *rows,
            "",
        ]
    )
    args.out.write_text(text)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
