"""The small-data frontier: a ladder of students trained alone and distilled, where methods can be told apart.

    python bench/frontier.py                 # both benchmarks → bench/frontier.md + bench/frontier.png
    python bench/frontier.py --quick         # smoke run: 2 rungs, 1 seed, 2 epochs, written to a temp folder
    python bench/frontier.py --bench fashion --methods hinton,dist
    python bench/frontier.py --jobs 2        # two training processes of one thread each (2 cores)
    python bench/frontier.py --set train.ema=0.999   # a change to every student, alone and distilled
    python bench/frontier.py --teacher-set train.ema=0.999   # a change to every teacher member
    python bench/frontier.py --teacher mobilenet_tiny --teacher-set data.dataset=fashion_mnist  # members

Benchmarks: **fashion** is Fashion-MNIST cut to 180 training images per class (1,530 train, 270 val) and
scored on the official 10,000 test images, over 5 training seeds on one split; **digits** is
scikit-learn's digits over 5 split seeds (a teacher per split: a teacher must never have seen the
student's test images). The ladder is `recipes/fashion/r{1,2,5,10,20}k.yaml` (global-average heads, so
the parameter count is the same at 8×8 and 28×28); on digits the same models run with digits'
augmentation (no flips) and their first two stages unpooled (`model.downsample`), since at 8×8 a pool
per stage leaves 1×1 maps. Every run goes through the code `edgekit train` runs.

When several methods are given, each is run on the ≤ 2k rung and the one with the best mean accuracy
where the benchmark chooses distils the whole ladder: on Fashion a 5,000-image dev set of training images
the benchmark never uses (bench/frontier_dev.py), on digits val. Test accuracy is read once, after.
"alone" and distilled runs of a seed share the data split, the seed and the epochs, so their difference
is paired; the table gives its mean with a 95% t interval over seeds. Teachers and finished runs are cached in
runs/frontier/ (keyed by the resolved recipe), so an interrupted run picks up where it stopped, and
workers given different `--rungs` share what each has finished; a last call over everything is all cache
hits and writes the complete report. `--jobs N` does that itself: it trains in waves of N processes
(the teachers, then the students alone with the method study, or with the distilled ladder when one method
is given, then the rest) and then reports; the students' waves are timed apart from the teachers'.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, cpu
from frontier_dev import dev_score
from frontier_report import RUNGS, markdown, plot
from frontier_runs import COMMON, Cache, train_in_waves
from rich.console import Console

import edgekit.train  # noqa: F401  (binds the registries the recipes are validated against)
from edgekit.recipe import load

# Each method as the overrides that select it; `fm` is function matching (Beyer et al., CVPR 2022):
# the student matches the teacher's whole function (alpha 1, no labels, T 1) on mixed-up inputs that
# both see, which probes the teacher far from the training images.
METHODS: dict[str, list[str]] = {
    "hinton": ["distill.method=hinton", "distill.alpha=0.5", "distill.temperature=2"],
    "dist": ["distill.method=dist"],
    "fm": ["distill.method=hinton", "distill.alpha=1", "distill.temperature=1", "data.augment.mixup=1.0"],
    # Logit standardization (Sun et al., CVPR 2024): hinton's KL on z-scored logits, so a tiny student
    # matches the teacher's logit relations, not its logit range. `zscore` changes nothing else from the
    # shipped hinton (alpha 0.5, T 2), isolating the pre-process; `zscore_a09` weights it as the paper's
    # CIFAR runs do (KD 9 to CE 0.1, base temperature 2), as far as a convex mix can (alpha 0.9).
    "zscore": ["distill.method=zscore", "distill.alpha=0.5", "distill.temperature=2"],
    "zscore_a09": ["distill.method=zscore", "distill.alpha=0.9", "distill.temperature=2"],
}
DIGITS = [
    "data.dataset=digits",
    "data.train_per_class=null",
    "data.augment={crop_padding: 1, rotate: 10, scale: [0.9, 1.1]}",
    # The ladder's EMA was chosen on Fashion's dev set; digits has no dev set and its tables were
    # measured without it.
    "train.ema=null",
    # Likewise the best-val epoch: the ladder's `select: last` was measured with EMA, on Fashion's dev set.
    "train.select=best",
]


def _unpooled(model: dict, first: int) -> str:
    """A LeNet's first `first` stages skip their max-pool."""
    flags = ", ".join("false" if i < first else "true" for i in range(len(model["channels"])))
    return f"model.downsample=[{flags}]"


def _unstrided(model: dict, first: int) -> str:
    """A MobileNet's first `first` stages keep stride 1 (its stages downsample by stride, not a pool)."""
    strides = ", ".join(str(1 if i < first else s) for i, s in enumerate(model["strides"]))
    return f"model.strides=[{strides}]"


# How each family in the ladder keeps the resolution of its first stages (Bench.keep_resolution).
KEEP_RESOLUTION = {"lenet": _unpooled, "mobilenet_tiny": _unstrided}


@dataclass
class Bench:
    name: str
    title: str
    overrides: list[str]
    seeds: list[int]
    per_split: bool  # True: each seed is also the split seed, with a teacher per split
    teacher: str = "fashion/teacher"
    members: int = 3  # the teacher is an ensemble of this many runs (seeds 0, 1, …): logits averaged
    keep_resolution: int = 0  # every rung's first N stages skip the max-pool (model.downsample)
    dev: bool = False  # choices on bench/frontier_dev.py's 5,000 unused training images, not the 270 val
    teacher_overrides: list[str] = field(default_factory=list)  # --teacher-set: every member's changes
    student_overrides: list[str] = field(default_factory=list)  # the students' own, alone and distilled

    def scored(self, summary: dict) -> dict:
        """The run's summary with `choice_acc`: what this benchmark's choices read (dev or val)."""
        return summary | {"choice_acc": dev_score(summary) if self.dev else summary["val_acc"]}

    def seed_overrides(self, seed: int) -> list[str]:
        return [f"seed={seed}", *([f"data.split_seed={seed}"] if self.per_split else [])]

    def student(self, model: list[str], seed: int, students: list[str]) -> list[str]:
        """A student run's overrides at `seed`, before any distillation: the bench's, the rung's model
        flags, the seed's, then the call's (`students`)."""
        return [*self.overrides, *self.student_overrides, *model, *self.seed_overrides(seed), *students]

    def model_overrides(self, recipe: str) -> list[str]:
        """The benchmark's own overrides for `recipe`'s model (its stage count sets the flags' length)."""
        if not self.keep_resolution:
            return []
        resolved = load(ROOT / "recipes" / f"{recipe}.yaml")
        return [KEEP_RESOLUTION[resolved.model.arch](resolved.options("model"), self.keep_resolution)]


BENCHES = {
    # 7 teacher members: the ensemble's val was 87.04% with 3 or 5, 87.78% with 7 or 10
    # (bench/frontier_choices.md). 5 seeds: with 3, seed-to-seed spread (±1 point) left every KD interval
    # at ≤ 5k straddling zero.
    # Choices on the dev set: over the 70 runs of r1k-r5k × 10 seeds, within each rung and method, test
    # accuracy correlated 0.43 with the runs' own 270-image val and 0.92 with the 5,000-image dev set.
    "fashion": Bench(
        "fashion",
        "Fashion-MNIST-1800 (10,000 test images)",
        [],
        [0, 1, 2, 3, 4],
        per_split=False,
        members=7,
        dev=True,
        # With the choices on dev and the last epoch kept, the students' 270 val images chose nothing:
        # trained on all 1,800 they scored +0.59 dev points [+0.36, +0.82] over 20 pairs at r2k and r10k
        # (bench/frontier_choices.md, "Training on the val images too"). The teachers keep their val
        # split: their members are chosen by best-val epoch.
        student_overrides=["data.val_fraction=0"],
    ),
    # At 8×8 a pool after every stage leaves 1×1 maps from the third on; keeping the first two stages at
    # full resolution won on val at 1k and 2k (bench/frontier_choices.md).
    # One teacher run per split: digits' rotations and scalings have no finite set of views to bank, so
    # the teacher runs live at every step, and 3 members made the 25 distilled runs take 49 min against
    # 25 alone, a quarter of the whole run (bench/frontier.md, 2026-12-04). On 270 test images the 3-member
    # ensemble's edge over its members (99.56% against 99.14%, about one image) is within noise.
    "digits": Bench(
        "digits",
        "digits over 5 splits (270 test images each)",
        DIGITS,
        [0, 1, 2, 3, 4],
        True,
        members=1,
        keep_resolution=2,
    ),
}


def teachers(bench: Bench, cache: Cache, common: list[str]) -> dict[int, list[dict]]:
    """seed → the summaries of the teacher ensemble's members: one ensemble for all seeds, or one per
    split."""

    def ensemble(split: list[str]) -> list[dict]:
        return [
            cache.train(
                bench.teacher,
                [
                    *bench.overrides,
                    *bench.model_overrides(bench.teacher),
                    *split,
                    f"seed={m}",
                    *common,
                    *bench.teacher_overrides,
                ],
            )
            for m in range(bench.members)
        ]

    if not bench.per_split:
        return dict.fromkeys(bench.seeds, ensemble([]))
    return {s: ensemble([f"data.split_seed={s}"]) for s in bench.seeds}


def distilled(members: list[dict], method: str) -> list[str]:
    return [f"distill.teacher=[{', '.join(m['run'] for m in members)}]", *METHODS[method]]


def as_teacher(kd: dict, members: list[dict]) -> dict:
    """The ensemble as one teacher: its test accuracy as the student's run scored it on the same images."""
    return {"test_acc": kd["distill"]["teacher_test_acc"], "members": members, "params": members[0]["params"]}


def ladder(
    bench: Bench, rungs: list[str], method: str | None, cache: Cache, common: list[str], students: list[str]
) -> list[dict]:
    """Each rung alone and distilled with `method`, over the bench's seeds (`students`: the students'
    overrides, `common` plus any of their own)."""
    tutors = teachers(bench, cache, common)
    rows = []
    for rung in rungs:
        row = {"rung": rung, "alone": [], "kd": [], "teacher": []}
        model = bench.model_overrides(f"fashion/{rung}")  # reads the recipe: once per rung, not per seed
        for seed in bench.seeds:
            base = bench.student(model, seed, students)
            row["alone"].append(bench.scored(cache.train(f"fashion/{rung}", base)))
            if method is None:  # planning: the method is chosen once its study has run
                continue
            row["kd"].append(
                bench.scored(cache.train(f"fashion/{rung}", [*base, *distilled(tutors[seed], method)]))
            )
            row["teacher"].append(as_teacher(row["kd"][-1], tutors[seed]))
        rows.append(row)
    return rows


def choose_method(
    bench: Bench, methods: list[str], cache: Cache, common: list[str], students: list[str]
) -> tuple[str, list]:
    """The method with the best mean choice accuracy (dev or val) on the ≤ 2k rung (test is not looked at)."""
    if len(methods) == 1:
        return methods[0], []
    tutors = teachers(bench, cache, common)
    study, model = [], bench.model_overrides("fashion/r2k")
    for method in methods:
        runs = []
        for seed in bench.seeds:
            base = bench.student(model, seed, students)
            runs.append(bench.scored(cache.train("fashion/r2k", [*base, *distilled(tutors[seed], method)])))
        study.append(
            {"method": method, "runs": runs, "score": statistics.mean(r["choice_acc"] for r in runs)}
        )
    if any(math.isnan(s["score"]) for s in study):  # planning, before the runs exist: not chosen yet
        return None, study
    return max(study, key=lambda s: s["score"])["method"], study


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="fashion,digits", help="comma-separated: fashion, digits")
    parser.add_argument(
        "--methods", default="hinton,dist,fm", help=f"distillation methods ({', '.join(METHODS)})"
    )
    parser.add_argument(
        "--seeds", help="comma-separated seeds for every benchmark (default: 5 seeds / 5 splits)"
    )
    parser.add_argument("--rungs", default=",".join(RUNGS), help="comma-separated rungs (default: all)")
    parser.add_argument(
        "--epochs", type=int, help="the students' epochs (default: the recipes'; teachers keep theirs)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for every student, alone and distilled (repeatable): train.ema=0.999",
    )
    parser.add_argument(
        "--teacher",
        metavar="RECIPE",
        help="the teacher members' recipe under recipes/, for every benchmark (default: fashion/teacher)",
    )
    parser.add_argument(
        "--teacher-members",
        type=int,
        metavar="N",
        help="the teacher ensemble's size (default: each benchmark's)",
    )
    parser.add_argument(
        "--teacher-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for every teacher member (repeatable): train.ema=0.999",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: r1k and r2k, 1 seed, 2 epochs")
    parser.add_argument(
        "--out", type=Path, help="folder for frontier.md/.png (default: bench/, --quick: temp)"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "frontier", help="runs and their cache")
    parser.add_argument(
        "--jobs", type=int, default=1, help="training processes (one thread each); 2 on 2 cores"
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    console = Console()
    started, started_at = time.perf_counter(), time.time()
    common = [*COMMON]
    rungs, methods = args.rungs.split(","), args.methods.split(",")
    if args.quick:
        common += ["train.epochs=2"]
        rungs, methods = RUNGS[:2], methods[:1]
    # Patient schedules (Beyer et al.) are a students' setting: "alone" gets the same epochs, so the
    # comparison stays paired, and the cached teachers are reused.
    students = [*common, *([f"train.epochs={args.epochs}"] if args.epochs else []), *args.set]
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else ROOT / "bench")
    out.mkdir(parents=True, exist_ok=True)  # before the runs: a bad --out fails now, not after hours
    benches = []
    for name in args.bench.split(","):
        bench = BENCHES[name]
        if args.seeds or args.quick:
            bench.seeds = [int(s) for s in (args.seeds or "0").split(",")]
        bench.teacher = args.teacher or bench.teacher
        bench.members = args.teacher_members or bench.members
        bench.teacher_overrides = list(args.teacher_set)
        benches.append(bench)

    def measure(cache: Cache) -> list[dict]:
        results = []
        for bench in benches:
            method, study = choose_method(bench, methods, cache, common, students)
            rows = ladder(bench, rungs, method, cache, common, students)
            results.append({"bench": bench, "method": method, "study": study, "rows": rows})
        return results

    waves = []
    if args.jobs > 1:  # the teachers first, in waves of their own, so the students' time is measured apart
        tutors = {bench.teacher for bench in benches}
        waves = train_in_waves(measure, args.cache, args.jobs, console, lambda recipe, _: recipe in tutors)
    results = measure(Cache(args.cache, console))
    command = "python bench/frontier.py " + " ".join(sys.argv[1:])
    minutes = (time.perf_counter() - started) / 60
    # The time goal is the whole benchmark's: both benches, every rung, the default seeds
    whole = set(args.bench.split(",")) == set(BENCHES) and set(rungs) == set(RUNGS) and not args.seeds
    timed = waves if whole and not args.quick else None
    (out / "frontier.md").write_text(markdown(command.strip(), cpu(), minutes, results, started_at, timed))
    plot(results, out / "frontier.png")
    console.print(f"wrote {out / 'frontier.md'} and {out / 'frontier.png'} ({minutes:.0f} min)")


if __name__ == "__main__":
    main()
