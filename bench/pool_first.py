"""A LeNet stage's max-pool before its ReLU against after it: training-step time, side by side.

    python bench/pool_first.py           # → bench/pool_first.md
    python bench/pool_first.py --quick   # smoke run: short timings, report in a temp folder

`edgekit.models.lenet.Stage` computes conv → norm → pool → act where the activation commutes with the
max-pool exactly (relu, relu6): the same outputs and gradients, with the activation (and its backward)
on a quarter of the elements. This times one training step (forward, backward, the recipes' SGD) of
each ladder rung and LeNet recipe both ways, in one process with one torch thread (a frontier worker's),
batch 64, channels_last as the trainer runs them, in adjacent pairs of short blocks; and checks that two
fresh copies, one made to pool after the activation, hold bit-identical weights after 20 steps.
Run on a quiet machine: other CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, row, write_markdown
from rich.console import Console

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.models import build_model
from edgekit.recipe import load

BATCH, PAIRS, STEPS = 64, 150, 5
# (recipe, image size, first two stages unpooled as the frontier's digits runs keep them)
CASES = [
    *((f"fashion/r{k}", 28, False) for k in ("1k", "2k", "5k", "10k", "20k")),
    *((f"fashion/r{k}", 8, True) for k in ("1k", "2k", "20k")),
    ("lenet_2k", 8, False),
    ("lenet_small", 8, False),
]


def model(recipe: str, size: int, keep_two_stages: bool) -> torch.nn.Module:
    rec = load(ROOT / "recipes" / f"{recipe}.yaml")
    options = rec.options("model")
    if keep_two_stages:
        options["downsample"] = [i >= 2 for i in range(len(options["channels"]))]
    return build_model(rec.model.arch, options, 1, 10, size).to(memory_format=torch.channels_last)


def pair(recipe: str, size: int, keep_two_stages: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model as built (pooling first where it may) and an identical copy made to pool after."""
    fast = model(recipe, size, keep_two_stages)
    slow = copy.deepcopy(fast)
    for stage in slow.features:
        stage.pool_first = False
    return fast, slow


def stepper(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(
        net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True
    )

    def step():
        loss = torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def paired_blocks(after, first, pairs: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds per block of `steps` steps for each arm, in adjacent pairs of alternating order. On this
    shared VM the speed drifts by ±20% over seconds; two blocks a few ms apart see the same drift, so the
    ratio within each pair is the robust figure."""
    for _ in range(steps * 2):  # warm-up: oneDNN primitives, allocator
        after(), first()
    times: dict = {after: [], first: []}
    for i in range(pairs):
        for arm in (after, first) if i % 2 == 0 else (first, after):
            started = time.perf_counter()
            for _ in range(steps):
                arm()
            times[arm].append(time.perf_counter() - started)
    return times[after], times[first]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "pool_first.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: few pairs, temp report")
    args = parser.parse_args()
    pairs = 10 if args.quick else PAIRS
    out = Path(tempfile.mkdtemp()) / "pool_first.md" if args.quick else args.out
    torch.set_num_threads(1)
    torch.manual_seed(0)
    console, started, rows = Console(), time.perf_counter(), []
    for recipe, size, keep in CASES[:2] if args.quick else CASES:
        fast, slow = pair(recipe, size, keep)
        pooled_first = sum(s.pool_first for s in fast.features)
        x = torch.randn(BATCH, 1, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (BATCH,))
        after, first = paired_blocks(stepper(slow, x, y), stepper(fast, x, y), pairs, STEPS)
        ratios = [a / f for a, f in zip(after, first, strict=True)]
        low, _, high = statistics.quantiles(ratios, n=4)
        # The timed arms ran their own steps, so identity is checked on fresh copies.
        same = identical(recipe, size, keep, x, y)
        ms_after, ms_first = (statistics.median(t) / STEPS * 1000 for t in (after, first))
        cells = [f"`{recipe}`", f"{size}×{size}", str(pooled_first), f"{ms_after:.2f}", f"{ms_first:.2f}"]
        cells += [f"{statistics.median(ratios):.2f}×", f"{low:.2f}–{high:.2f}×", same]
        rows.append(row(cells, console))
    minutes = (time.perf_counter() - started) / 60
    write_markdown(
        out,
        "A LeNet stage's max-pool before its ReLU against after it",
        "python bench/pool_first.py " + " ".join(sys.argv[1:]),
        f"torch {torch.__version__}, one torch thread, batch {BATCH}, channels_last, SGD (nesterov, weight "
        f"decay, foreach) as the recipes; {minutes:.1f} min. Each row: {pairs} adjacent pairs of "
        f"{STEPS}-step blocks, one per arm, in alternating order; ms: each arm's median block; speed-up: "
        "the median of the pairs' own ratios (after / first), with their interquartile range. Digits rows "
        "keep the first two stages unpooled (bench/frontier.py's `model.downsample`), so only the later "
        "stages pool. Identical: two fresh copies trained 20 steps on the same batch, every weight and "
        "buffer compared with torch.equal.",
        {
            "recipe": "l",
            "input": "l",
            "stages pooled": "r",
            "pool after act ms": "r",
            "pool first ms": "r",
            "speed-up": "r",
            "middle half of pairs": "r",
            "identical": "l",
        },
        rows,
        console,
    )


def identical(recipe: str, size: int, keep: bool, x: torch.Tensor, y: torch.Tensor) -> str:
    """Train two copies 20 steps on the same batch, one forced to pool after the activation."""
    fast, slow = pair(recipe, size, keep)
    for step in (stepper(fast, x, y), stepper(slow, x, y)):
        for _ in range(20):
            step()
    pairs = zip(fast.state_dict().values(), slow.state_dict().values(), strict=True)
    return "yes" if all(torch.equal(a, b) for a, b in pairs) else "**no**"


if __name__ == "__main__":
    main()
