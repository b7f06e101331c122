"""The learning-rate range test (Smith 2017, as fastai and Lightning ship it): `edgekit lr-find`, `lr: auto`.

From a copy of the recipe's model, optimizer, objective (plain or distillation) and augmented batches,
the learning rate rises exponentially from `start` to `end` over `steps` steps while the smoothed loss is
recorded; the test stops once that loss diverges. It never touches a run: the model is thrown away.
"""

from __future__ import annotations

import csv
import math
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
        """The lr where the smoothed loss falls fastest against log(lr): the suggestion."""
        n = len(self.smoothed)
        lo, hi = (SKIP_START, n - SKIP_END) if n > SKIP_START + SKIP_END + 2 else (0, n)
        logs = [math.log(lr) for lr in self.lrs]
        slopes = [
            (self.smoothed[i + 1] - self.smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
            for i in range(max(lo, 1), min(hi, n - 1))
        ]
        return self.lrs[max(lo, 1) + min(range(len(slopes)), key=slopes.__getitem__)]

    def min_loss_tenth(self) -> float:
        """The lr of the lowest smoothed loss, divided by 10 (the other common rule)."""
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)] / 10


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


def write(result: RangeTest, folder: Path) -> None:
    """lr_find.csv (lr, loss, smoothed) and lr_find.png (log axis, suggestion marked) in `folder`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (folder / "lr_find.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["lr", "loss", "smoothed_loss"])
        out.writerows(zip(result.lrs, result.losses, result.smoothed, strict=True))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed loss")
    for lr, style, name in ((result.steepest(), "-", "steepest"), (result.min_loss_tenth(), ":", "min / 10")):
        ax.axvline(lr, ls=style, color="red", label=f"{name}: {lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low, first = min(result.smoothed), result.smoothed[0]
    ax.set_ylim(low - 0.1 * (first - low) - 1e-3, first + 0.5 * (first - low) + 1e-3)  # the useful part
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "lr_find.png", dpi=110)
    plt.close(fig)


def checked_range(start: float, end: float, steps: int) -> RangeParams:
    """The CLI's --start/--end/--steps, or a one-line error naming the option."""
    from pydantic import ValidationError

    try:
        return RangeParams(start=start, end=end, steps=steps)
    except ValidationError as e:
        err = e.errors()[0]
        where = f"--{err['loc'][0]} {err['input']}: " if err["loc"] else ""
        raise EdgekitError(f"lr-find: {where}{err['msg'].removeprefix('Value error, ')}") from None


def _with_lr(recipe, lr: float):
    copy = recipe.model_copy(deep=True)
    copy.train.optimizer.lr = lr
    return copy


def find(recipe, params: RangeParams, out_root: Path, console) -> tuple[Path, RangeTest]:
    """`edgekit lr-find`: the test on `recipe`, its curve in a new `out_root/<recipe name>/` folder."""
    from edgekit.runs import new_run_dir

    result = range_test(_with_lr(recipe, params.start), params)  # the lr is replaced at every step
    folder = new_run_dir(out_root, recipe.name)
    write(result, folder)
    ended = f"diverged at lr {result.diverged_at:.2g}" if result.diverged_at else "did not diverge"
    console.print(
        f"{recipe.name}: suggested lr {result.steepest():.3g} (steepest descent of the smoothed loss); "
        f"min loss / 10: {result.min_loss_tenth():.3g}; the loss {ended}; {len(result.lrs)} steps → {folder}"
    )
    return folder, result


def resolve_auto(recipe, console) -> tuple[Any, dict | None]:
    """A recipe whose `train.optimizer.lr` is `auto` gets the range test's suggestion, rounded to 3
    significant digits; returns the recipe to train and what to record in the run (None: not auto)."""
    if recipe.options("train", "optimizer").get("lr") != "auto":
        return recipe, None
    from edgekit.train import ddp

    params = RangeParams()
    # Under torchrun every rank takes part (the model is DDP-wrapped) and rank 0's choice is everyone's.
    result = range_test(_with_lr(recipe, params.start), params)
    lr = ddp.from_main(float(f"{result.steepest():.3g}"))
    console.print(
        f"train.optimizer.lr: auto → {lr:g} (lr range test; min loss / 10 would give "
        f"{result.min_loss_tenth():.3g})"
    )
    found = {
        "lr": lr,
        "steepest": result.steepest(),
        "min_loss_tenth": result.min_loss_tenth(),
        "range": [params.start, params.end],
        "steps": len(result.lrs),
        "curve": result,
    }
    return _with_lr(recipe, lr), found
