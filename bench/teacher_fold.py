"""A live teacher with its BatchNorms folded into its convs against the same teacher unfolded, side by side.

    python bench/teacher_fold.py           # → bench/teacher_fold.md
    python bench/teacher_fold.py --quick   # smoke run: few repeats, report in a temp folder

Distillation asks the teacher every step when the augmentation has no finite set of views to bank (digits'
rotation and zoom): the frontier's digits students ask a 3-member `fashion/teacher` ensemble per batch of 64.
`edgekit.train.teacher.Teacher` folds each BatchNorm into the conv before it (torch.fx); this measures, in
one process with one torch thread (a frontier worker's), the ms per batch of the ensemble unfolded and
folded, and of a student's own training step, so the distillation step's speed-up can be read from the
same run. The logits' largest difference shows that folding changes only float rounding. Weights are
random and the BatchNorms' running statistics perturbed: speed does not depend on what was learned.
Run on a quiet machine: other CPU work distorts every figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from common import ROOT, row, write_markdown
from rich.console import Console
from torch.utils.benchmark import Timer

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.models import build_model
from edgekit.recipe import load
from edgekit.train.teacher import Ensemble, Teacher

BATCH, MEMBERS, ROUNDS = 64, 3, 4
# input → (image size, first two stages at full resolution): as bench/frontier.py runs them
INPUTS = {"digits 8×8": (8, True), "Fashion 28×28": (28, False)}
STUDENTS = ["fashion/r1k", "fashion/r2k", "fashion/r5k"]


def model(recipe: str, size: int, keep_two_stages: bool) -> torch.nn.Module:
    """`recipe`'s model for a 1-channel `size`² input; at 8×8 its first two stages keep full resolution
    (frontier's digits `keep_resolution`)."""
    rec = load(ROOT / "recipes" / f"{recipe}.yaml")
    options = rec.options("model")
    if keep_two_stages:
        options["downsample"] = [i >= 2 for i in range(len(options["channels"]))]
    return build_model(rec.model.arch, options, 1, 10, size).to(memory_format=torch.channels_last)


def perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """Running statistics away from (0, 1), so that folding has work to do; then eval mode."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def ms(stmt, repeats: float) -> float:
    """Median ms per call (torch.utils.benchmark: warm-up, then blocks of calls)."""
    return Timer(stmt="f()", globals={"f": stmt}).blocked_autorange(min_run_time=repeats).median * 1000


def ensembles(size: int, keep: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same 3-member ensemble twice: each member as it was before folding, and as Teacher builds it."""
    identity = ([0.0], [1.0])
    members = [perturbed(model("fashion/teacher", size, keep)) for _ in range(MEMBERS)]
    as_before = Ensemble([_unfolded_teacher(m, identity) for m in members])
    as_now = Ensemble([Teacher(m, Path("t.pt"), identity, identity) for m in members])
    # As the trainer does (run._objective): the teacher in the student's layout, after it was built.
    return tuple(e.to(memory_format=torch.channels_last) for e in (as_before, as_now))


def _unfolded_teacher(net: torch.nn.Module, stats) -> Teacher:
    teacher = Teacher(torch.nn.Identity(), Path("t.pt"), stats, stats)
    teacher.model = net  # what Teacher held before it folded
    return teacher


@torch.no_grad()
def answer(teacher: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return teacher(x)


def student_step(recipe: str, size: int, keep: bool, x: torch.Tensor):
    net = model(recipe, size, keep)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    y = torch.randint(0, 10, (len(x),))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "teacher_fold.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: short timings, temp report")
    args = parser.parse_args()
    repeats = 0.2 if args.quick else 2.0  # seconds of timed calls per figure
    out = Path(tempfile.mkdtemp()) / "teacher_fold.md" if args.quick else args.out
    torch.set_num_threads(1)
    torch.manual_seed(0)
    console, started, rows = Console(), time.perf_counter(), []
    for name, (size, keep) in INPUTS.items():
        x = torch.randn(BATCH, 1, size, size).contiguous(memory_format=torch.channels_last)
        before, now = ensembles(size, keep)
        gap = (answer(before, x) - answer(now, x)).abs().max().item()
        # Rounds in alternating order, medians taken: drift and warm-up favour neither arm.
        timed: dict[str, list[float]] = {"before": [], "now": []}
        for r in range(ROUNDS):
            for arm in ("before", "now") if r % 2 == 0 else ("now", "before"):
                ensemble = before if arm == "before" else now
                timed[arm].append(ms(partial(answer, ensemble, x), repeats))
        t_before, t_now = statistics.median(timed["before"]), statistics.median(timed["now"])
        # each round's own speed-up: the noise, made visible
        per_round = sorted(b / n for b, n in zip(timed["before"], timed["now"], strict=True))
        for recipe in STUDENTS:
            own = ms(student_step(recipe, size, keep, x), repeats)
            ratio = (own + t_before) / (own + t_now)
            cells = [name, f"`{recipe}`", f"{own:.2f}", f"{t_before:.2f}", f"{t_now:.2f}"]
            cells += [f"{t_before / t_now:.2f}×", f"{per_round[0]:.2f}–{per_round[-1]:.2f}×"]
            cells += [f"{ratio:.2f}×", f"{gap:.1e}"]
            rows.append(row(cells, console))
    minutes = (time.perf_counter() - started) / 60
    write_markdown(
        out,
        "A live teacher folded (BatchNorm into conv) against unfolded",
        "python bench/teacher_fold.py " + " ".join(sys.argv[1:]),
        f"torch {torch.__version__}, one torch thread, batch {BATCH}, channels_last; {minutes:.1f} min. "
        f"The teacher: {MEMBERS} `fashion/teacher` members (logits averaged), as the frontier's students "
        "ask it on digits; ms are medians of torch.utils.benchmark, the teachers' over "
        f"{ROUNDS} rounds in alternating order. A distillation step with a live teacher is the student's "
        "step plus the ensemble's forward (the loss itself is negligible); its speed-up "
        "is (student + unfolded) / (student + folded). Per round: the lowest and highest of the rounds' own "
        "teacher speed-ups. |Δ logit|: the largest difference between the two "
        "ensembles' outputs on the batch.",
        {
            "input": "l",
            "student": "l",
            "student step ms": "r",
            "teacher unfolded ms": "r",
            "teacher folded ms": "r",
            "teacher speed-up": "r",
            "per round": "r",
            "distillation step speed-up": "r",
            "max \\|Δ logit\\|": "r",  # escaped: a bare | would end the cell
        },
        rows,
        console,
    )


if __name__ == "__main__":
    main()
