"""Distilling with the teacher's logits precomputed per view (`distill.precompute: auto`) against asking the
teacher every step (`never`), beside the student trained alone: wall time and accuracy, side by side.

    python bench/teacher_bank.py                     # fashion/r2k from the 7-member ensemble, 300 epochs
    python bench/teacher_bank.py --epochs 60 --seeds 0,1

The teacher is `bench/frontier.py`'s Fashion ensemble, taken from its cache (trained there if missing).
The three arms of a seed run one after another in one process on a quiet machine, with one thread, so
their times compare. Banked and live runs see the same batches and the same teacher logits (up to float
rounding), so their accuracies should agree within the noise of a chaotic 300-epoch trajectory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, mean_std, row, train, write_markdown
from frontier import BENCHES, distilled, teachers
from frontier_runs import COMMON, Cache
from rich.console import Console

ARMS = {
    "alone": lambda kd: [],
    "distilled, teacher every step": lambda kd: [*kd, "distill.precompute=never"],
    "distilled, teacher precomputed": lambda kd: [*kd, "distill.precompute=auto"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion/r2k")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "teacher_bank.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console()
    bench, common = BENCHES["fashion"], [*COMMON]
    tutors = teachers(bench, Cache(ROOT / "runs" / "frontier", console), common)
    runs = Path(tempfile.mkdtemp(prefix="teacher_bank_"))
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    lines = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        kd = distilled(tutors[seed], "hinton")
        base = [*common, f"seed={seed}", f"train.epochs={args.epochs}"]
        for arm, extra in ARMS.items():
            started = time.perf_counter()
            s = train(args.recipe, [*base, *extra(kd)], runs)
            s["total_s"] = time.perf_counter() - started  # with the teacher checks and the bank's fill
            results[arm].append(s)
            banked = (s.get("distill") or {}).get("precomputed")
            lines.append(
                row(
                    [
                        str(seed),
                        arm,
                        f"{s['total_s']:.0f}",
                        f"{banked['seconds']:.1f}" if banked else "—",
                        f"{s['val_acc']:.2%}",
                        f"{s['test_acc']:.2%}",
                    ],
                    console,
                )
            )
    alone, live, bank = (sum(r["total_s"] for r in results[a]) for a in ARMS)
    members = len(tutors[0])
    summary = [
        "",
        f"Over all seeds: precomputed takes {bank / live:.2f}× the time of asking the teacher every step "
        f"({live / bank:.1f}× faster) and {bank / alone:.2f}× the time of training alone.",
        "",
        "| arm | val acc | test acc |",
        "| --- | ---: | ---: |",
        *[
            f"| {arm} | {mean_std([r['val_acc'] for r in rs])} | {mean_std([r['test_acc'] for r in rs])} |"
            for arm, rs in results.items()
        ],
    ]
    write_markdown(
        args.out,
        "Teacher logits precomputed per view",
        "python bench/teacher_bank.py " + " ".join(sys.argv[1:]),
        f"One thread. `{args.recipe}` for {args.epochs} epochs, distilled "
        f"(hinton) from the {members}-member Fashion ensemble of `bench/frontier.py`; wall = "
        "the whole `edgekit train` call (data, teacher checks, the bank's fill, training, test).",
        {"seed": "l", "arm": "l", "wall s": "r", "bank fill s": "r", "val acc": "r", "test acc": "r"},
        lines,
        console,
    )
    with args.out.open("a") as f:
        f.write("\n".join(summary) + "\n")
    console.print("\n".join(summary))


if __name__ == "__main__":
    main()
