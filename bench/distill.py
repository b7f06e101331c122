"""Knowledge distillation on digits: each `_kd` student trained alone and with each KD method, over seeds.

    python bench/distill.py                                   # lenet_2k, lenet_1k, mobilenet_tiny; 3 seeds
    python bench/distill.py lenet_2k --seeds 0,1,2,3,4 --teacher runs/teacher_resnet_small

The teacher (`recipes/teacher_resnet_small.yaml`, seed 0) is trained once unless `--teacher` names a run.
Every student run goes through the same code as `edgekit train recipes/<student>_kd.yaml distill.method=…
seed=…`; "alone" is the same recipe with `distill=null`. Same epochs, split and augmentation for all.
"Gap recovered" is (KD − alone) / (teacher − alone) on mean test accuracy: 100% means the student reached
the teacher. Test split: 270 images, so one image is 0.37 points and differences under ~1 point are noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, mean_std, row, train, write_markdown
from rich.console import Console

METHODS = ["hinton", "dkd", "zscore"]
SETTINGS: dict[str, str] = {}  # method → its parameters as run


def student_rows(
    student: str, teacher: dict, seeds: list[int], extra: list[str], runs: Path, console
) -> list[str]:
    """One row for the student alone and one per method, each over all seeds."""
    variants = {"alone": ["distill=null"]} | {
        m: [f"distill.teacher={teacher['run']}", f"distill.method={m}"] for m in METHODS
    }
    alone_mean, rows = None, []
    for name, overrides in variants.items():
        started = time.perf_counter()
        results = [train(f"{student}_kd", [*overrides, f"seed={s}", *extra], runs) for s in seeds]
        accs = [r["test_acc"] for r in results]
        if name != "alone":  # what the method actually ran with, for the header
            SETTINGS[name] = ", ".join(f"{k} {v:g}" for k, v in results[0]["distill"]["params"].items())
        mean = statistics.mean(accs)
        if name == "alone":
            alone_mean, recovered = mean, "—"
        else:
            gap = teacher["test_acc"] - alone_mean
            recovered = f"{(mean - alone_mean) / gap:.0%}" if gap > 0 else "n/a (no gap)"
        cells = [f"`{student}`", f"{results[0]['params']:,}", name, mean_std(accs)]
        cells += [", ".join(f"{a:.2%}" for a in accs), recovered]
        rows.append(row([*cells, f"{(time.perf_counter() - started) / len(seeds):.0f} s"], console))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="*", default=["lenet_2k", "lenet_1k", "mobilenet_tiny"])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (at least 3 for a std)")
    parser.add_argument("--teacher", type=Path, help="an existing teacher run (default: train one)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for students")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "distill.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if args.teacher:
            teacher = json.loads((args.teacher / "summary.json").read_text()) | {"run": str(args.teacher)}
        else:
            teacher = train("teacher_resnet_small", ["seed=0"], Path(tmp) / "teacher")
        console.print(
            f"teacher: {teacher['params']:,} params, test {teacher['test_acc']:.2%} "
            f"({time.perf_counter() - started:.0f} s)"
        )
        rows = []
        for student in args.students:
            rows += student_rows(student, teacher, seeds, args.set, Path(tmp) / student, console)
    command = " ".join(
        ["python bench/distill.py", *args.students, "--seeds", args.seeds]
        + (["--teacher", str(args.teacher)] if args.teacher else [])
        + (["--set", *args.set] if args.set else [])
        + (["--out", str(args.out)] if args.out != ROOT / "bench" / "distill.md" else [])
    )
    details = (
        f"Teacher `teacher_resnet_small` (seed 0): {teacher['params']:,} parameters, test accuracy "
        f"**{teacher['test_acc']:.2%}**. Test split: 270 images (one image = 0.37 points). Settings as run: "
        + "; ".join(f"{m}: {v}" for m, v in SETTINGS.items())
        + "."
    )
    columns = {"student": "l", "params": "r", "training": "l", "test acc (mean ± std)": "r"}
    columns |= {"per seed": "l", "gap recovered": "r", "time/seed": "r"}
    write_markdown(args.out, "Knowledge distillation on digits", command, details, columns, rows, console)


if __name__ == "__main__":
    main()
