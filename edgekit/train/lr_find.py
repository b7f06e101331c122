"""The learning-rate range test (Smith 2017, as fastai and Lightning ship it): `edgekit lr-find`, `lr: auto`.

From a copy of the recipe's model, optimizer, objective (plain or distillation) and augmented batches,
the learning rate rises exponentially from `start` to `end` over `steps` steps while the smoothed loss is
recorded; the test stops once that loss diverges. It never touches a run: the model is thrown away.
The test is repeated at `repeats` seeds and each rule's median taken: one test's steepest point moved by
up to a factor of 4.7 from seed to seed (bench/lr_find_spread.md). The suggestion is min loss / 10, which
ranked better than steepest descent on lr grids no rule had been read from (bench/tune_fashion_fresh.md).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit.errors import EdgekitError

SMOOTHING = 0.98  # exponential moving average of the loss (bias-corrected), as fastai
DIVERGED = 4.0  # stop once the smoothed loss exceeds this many times its minimum
SKIP_START, SKIP_END = 10, 5  # points ignored at either end when looking for the steepest descent


class RangeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float = Field(1e-6, gt=0)
    end: float = Field(10.0, gt=0)
    steps: int = Field(200, ge=20, le=10_000)
    repeats: int = Field(3, ge=1, le=20)

    @model_validator(mode="after")
    def _increasing(self) -> RangeParams:
        if self.end <= self.start:
            raise ValueError(f"the lr range must increase: start {self.start:g} ≥ end {self.end:g}")
        return self


@dataclass
class RangeTest:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # raw, per step
    smoothed: list[float] = field(default_factory=list)
    diverged_at: float | None = None  # the lr at which the smoothed loss blew up, if it did

    def steepest(self) -> float:
        """The lr where the smoothed loss falls fastest against log(lr) (Lightning's rule)."""
        n = len(self.smoothed)
        lo, hi = (SKIP_START, n - SKIP_END) if n > SKIP_START + SKIP_END + 2 else (0, n)
        logs = [math.log(lr) for lr in self.lrs]
        slopes = [
            (self.smoothed[i + 1] - self.smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
            for i in range(max(lo, 1), min(hi, n - 1))
        ]
        return self.lrs[max(lo, 1) + min(range(len(slopes)), key=slopes.__getitem__)]

    def min_loss_tenth(self) -> float:
        """The lr of the lowest smoothed loss, divided by 10 (fastai's first rule)."""
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)] / 10


# Each rule by the name lr-find prints it under, the suggestion first: min loss / 10 ranked better than
# steepest descent on lr grids no rule had been read from (bench/tune_fashion_fresh.md).
RULES = {"min loss / 10": RangeTest.min_loss_tenth, "steepest": RangeTest.steepest}
SUGGESTION = next(iter(RULES))


@dataclass
class Finding:
    """The range tests of one recipe at seeds seed, seed + 1, …, and each rule's median over them."""

    tests: list[RangeTest]

    def rule(self, name: str) -> float:
        """The median over the tests of one rule's lr."""
        return _median(RULES[name](t) for t in self.tests)

    def suggestion(self) -> float:
        return self.rule(SUGGESTION)

    def rules(self) -> dict[str, float]:
        """Each rule's lr by its name, the suggestion first."""
        return {name: self.rule(name) for name in RULES}

    def others(self) -> str:
        """The rules beside the suggestion, as lr-find prints them: "steepest: 0.0116"."""
        return ", ".join(f"{name}: {lr:.3g}" for name, lr in self.rules().items() if name != SUGGESTION)


def _median(lrs) -> float:
    return math.exp(statistics.median(math.log(lr) for lr in lrs))  # on a log axis, as the lrs are spaced


def find_lr(recipe, params: RangeParams | None = None) -> Finding:
    """`params.repeats` range tests of `recipe`, each at its own seed (initial weights, batch order).
    The recipe's lr (perhaps `auto`) is replaced by the range's start, and then at every step."""
    p = params or RangeParams()
    return Finding([range_test(_with(recipe, p.start, recipe.seed + i), p) for i in range(p.repeats)])


def range_test(recipe, params: RangeParams | None = None) -> RangeTest:
    """Run the test on `recipe`'s model, optimizer, objective and training batches."""
    from edgekit.data import prepare_for
    from edgekit.train.loop import autocast, in_layout
    from edgekit.train.run import build_state

    p = params or RangeParams()
    state = build_state(recipe, prepare_for(recipe), bank=False)
    net = state.net if state.net is not None else state.model
    net.train()
    result, average, best = RangeTest(), 0.0, math.inf
    batches = _forever(state.train)
    for step in range(p.steps):
        lr = p.start * (p.end / p.start) ** (step / (p.steps - 1))
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        with autocast(state):
            loss, _ = state.objective(net, in_layout(state, x), y)
        value = loss.item()
        if not math.isfinite(value):
            if step == 0:
                raise EdgekitError(
                    f"{recipe.name}: the loss is {value} at the first step (lr {lr:.2g}); lower the "
                    "start of the range (--start) or check the data"
                )
            result.diverged_at = lr
            break
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        result.lrs.append(lr), result.losses.append(value), result.smoothed.append(smoothed)
        best = min(best, smoothed)
        if step > SKIP_START and smoothed > DIVERGED * best:
            result.diverged_at = lr
            break
    if len(result.lrs) < SKIP_START + SKIP_END + 3:
        raise EdgekitError(
            f"{recipe.name}: the loss diverged after {len(result.lrs)} steps of the range test; lower "
            "the start of the range (--start)"
        )
    return result


def _forever(loader):
    while True:
        yield from loader


def write(found: Finding, folder: Path) -> None:
    """lr_find.csv (repeat, lr, loss, smoothed) and lr_find.png (log axis, each rule marked) in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (folder / "lr_find.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["repeat", "lr", "loss", "smoothed_loss"])
        for i, t in enumerate(found.tests):
            out.writerows((i, *row) for row in zip(t.lrs, t.losses, t.smoothed, strict=True))
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, t in enumerate(found.tests):
        ax.plot(
            t.lrs,
            t.smoothed,
            lw=1,
            label=f"smoothed loss, seed +{i}" if len(found.tests) > 1 else "smoothed loss",
        )
    for (name, lr), style in zip(found.rules().items(), ("-", ":"), strict=True):
        ax.axvline(lr, ls=style, color="red", label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low = min(min(t.smoothed) for t in found.tests)
    first = max(t.smoothed[0] for t in found.tests)
    ax.set_ylim(low - 0.1 * (first - low) - 1e-3, first + 0.5 * (first - low) + 1e-3)  # the useful part
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / "lr_find.png", dpi=110)
    plt.close(fig)


def checked_range(start: float, end: float, steps: int, repeats: int) -> RangeParams:
    """The CLI's --start/--end/--steps/--repeats, or a one-line error naming the option."""
    from pydantic import ValidationError

    try:
        return RangeParams(start=start, end=end, steps=steps, repeats=repeats)
    except ValidationError as e:
        err = e.errors()[0]
        where = f"--{err['loc'][0]} {err['input']}: " if err["loc"] else ""
        raise EdgekitError(f"lr-find: {where}{err['msg'].removeprefix('Value error, ')}") from None


def _with(recipe, lr: float, seed: int | None = None):
    copy = recipe.model_copy(deep=True)
    copy.train.optimizer.lr = lr
    copy.seed = recipe.seed if seed is None else seed
    return copy


def find(recipe, params: RangeParams, out_root: Path, console) -> tuple[Path, Finding]:
    """`edgekit lr-find`: the tests on `recipe`, their curves in a new `out_root/<recipe name>/` folder."""
    from edgekit.runs import new_run_dir

    found = find_lr(recipe, params)
    folder = new_run_dir(out_root, recipe.name)
    write(found, folder)
    each = ", ".join(f"{RULES[SUGGESTION](t):.3g}" for t in found.tests)
    console.print(
        f"{recipe.name}: suggested lr {found.suggestion():.3g} ({SUGGESTION}, the median of "
        f"{len(found.tests)} tests: {each}); {found.others()} → {folder}"
    )
    return folder, found


def resolve_auto(recipe, console) -> tuple[Any, dict | None]:
    """A recipe whose `train.optimizer.lr` is `auto` gets the range test's suggestion, rounded to 3
    significant digits; returns the recipe to train and what to record in the run (None: not auto)."""
    if recipe.options("train", "optimizer").get("lr") != "auto":
        return recipe, None
    from edgekit.train import ddp

    params = RangeParams()
    # Under torchrun every rank takes part (the model is DDP-wrapped) and rank 0's choice is everyone's.
    found = find_lr(recipe, params)
    lr = ddp.from_main(float(f"{found.suggestion():.3g}"))
    console.print(
        f"train.optimizer.lr: auto → {lr:g} (lr range test: {SUGGESTION}, median of {params.repeats}; "
        f"the others: {found.others()})"
    )
    record = {
        "lr": lr,
        "rule": SUGGESTION,
        "rules": found.rules(),
        "suggestion_per_test": [RULES[SUGGESTION](t) for t in found.tests],
        "range": [params.start, params.end],
        "steps": [len(t.lrs) for t in found.tests],
        "curve": found,
    }
    return _with(recipe, lr), record
