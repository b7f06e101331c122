"""Train every shipped recipe on digits and tabulate parameters, MACs and test accuracy.

    python bench/zoo.py                       # all recipes in recipes/, 1 seed, writes bench/zoo.md
    python bench/zoo.py --seeds 0,1,2 lenet_2k lenet_1k

Each recipe is trained exactly as `edgekit train recipes/<name>.yaml seed=<s>` would (same code path),
in a temporary runs folder, and its summary.json is read back. Test accuracy is on the held-out test
split (270 images for digits: one image is 0.37 points), so differences under ~1.5 points are noise.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, mean_std, row, train, write_markdown
from rich.console import Console


def ladder() -> list[str]:
    """The shipped recipes but base (shared defaults) and the teacher and `_kd` students (distill.py's)."""
    names = [p.stem for p in sorted((ROOT / "recipes").glob("*.yaml"))]
    return [n for n in names if n != "base" and not n.startswith("teacher_") and not n.endswith("_kd")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="recipe names (default: the ladder in recipes/)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo.md")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every recipe"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, console = [], Console()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names or ladder():
            started = time.perf_counter()
            runs = [train(name, [f"seed={s}", *args.set], Path(tmp) / str(s)) for s in seeds]
            first, seconds = runs[0], (time.perf_counter() - started) / len(seeds)
            accs = [mean_std([r[k] for r in runs]) for k in ("val_acc", "test_acc")]
            cells = [f"`{name}`", f"{first['params']:,}", f"{first['macs']:,}", str(first["epochs"]), *accs]
            rows.append(row([*cells, f"{seconds:.0f} s"], console))
    command = " ".join(
        ["python bench/zoo.py", *args.names]
        + (["--seeds", args.seeds] if args.seeds != "0" else [])
        + (["--set", *args.set] if args.set else [])
        + ([f"--out {args.out.name}"] if args.set else [])
    )
    data = next((o.split("=", 1)[1] for o in args.set if o.startswith("data.dataset=")), "digits")
    split = " Test split: 270 images (one image = 0.37 points)." if data == "digits" else ""
    details = f"Seeds {seeds}.{split}"
    columns = {"recipe": "l", "params": "r", "MACs": "r", "epochs": "r"}
    columns |= {"val acc (best epoch)": "r", "test acc": "r", "train time": "r"}
    write_markdown(args.out, f"Shipped recipes on {data}", command, details, columns, rows, console)


if __name__ == "__main__":
    main()
