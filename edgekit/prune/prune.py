"""Structured channel pruning with torch-pruning (importance → pruner → step → count), then fine-tuning."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from rich.console import Console
from rich.table import Column, Table
from torch import nn

from edgekit.data import Prepared, prepare_for
from edgekit.data.loader import DeviceLoader
from edgekit.errors import EdgekitError
from edgekit.models import Classifier, count_macs, count_params, from_checkpoint
from edgekit.prune.importance import IMPORTANCES, GroupNormPruner
from edgekit.recipe import apply_overrides, validate
from edgekit.recipe_schema import Recipe
from edgekit.runs import Run, load_checkpoint, run_dir_of
from edgekit.train.summary import eval_batch

MAX_RATIO = 0.99  # of channels removed; at 1.0 torch-pruning would have to empty layers, which it refuses
SEARCH_ITERS = 10  # trials of the channel ratio at most; the bracket shrinks by a quarter or more each
CLOSE_ENOUGH = 0.05  # stop the search once within this fraction below the target
GRAD_IMAGES = 256  # training images whose loss gradient the taylor importance reads


@dataclass(frozen=True)
class How:
    """What to prune to and how: `keep` of `metric` (macs or params), the rest torch-pruning's knobs."""

    metric: str
    keep: float
    importance: str = "l1"
    steps: int = 1
    global_pruning: bool = False
    round_to: int | None = None


def target(macs: float | None, params: float | None) -> tuple[str, float]:
    """(metric, fraction kept) from exactly one of --macs and --params."""
    given = {name: value for name, value in (("macs", macs), ("params", params)) if value is not None}
    if len(given) != 1:
        got = " and ".join(f"--{k} {v}" for k, v in given.items()) or "neither"
        raise EdgekitError(f"pruning target: give one of --macs or --params (a fraction kept), got {got}")
    return next(iter(given.items()))


METRICS = {"macs": count_macs, "params": lambda model, shape: count_params(model)}


def check(how: How, finetune_epochs: int = 1, lr: float | None = None) -> None:
    """One-line errors for options no pruning could satisfy, before anything is read or written."""
    if how.metric not in METRICS:
        raise EdgekitError(f"pruning target '{how.metric}': unknown; allowed: {', '.join(METRICS)}")
    problems = {
        f"--{how.metric} {how.keep}": (0 < how.keep < 1, f"the fraction of {how.metric} kept, in (0, 1)"),
        f"--steps {how.steps}": (how.steps >= 1, "an integer ≥ 1 (1: one-shot)"),
        f"--round-to {how.round_to}": (how.round_to is None or how.round_to >= 1, "an integer ≥ 1"),
        f"--finetune-epochs {finetune_epochs}": (finetune_epochs >= 1, "an integer ≥ 1"),
        f"--lr {lr}": (lr is None or lr > 0, "a learning rate > 0"),
    }
    for option, (ok, allowed) in problems.items():
        if not ok:
            raise EdgekitError(f"{option}: expected {allowed}")
    IMPORTANCES.get(how.importance, "--importance")


def _gradients(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Fill .grad with the loss gradient on real images: taylor importance is |weight × grad|."""
    model.zero_grad(set_to_none=True)
    x, y = batch
    nn.functional.cross_entropy(model(x), y).backward()


def _pruned_copy(model: Classifier, ratio: float, how: How, batch) -> Classifier:
    """A copy of `model` with `ratio` of its channels removed by torch-pruning in `how.steps` steps."""
    pruned = copy.deepcopy(model).eval()  # eval: tracing and gradients must not move BatchNorm statistics
    pruner = tp.pruner.BasePruner(
        pruned,
        batch[0][:1],
        importance=IMPORTANCES.get(how.importance, "--importance").fn(pruned),
        pruning_ratio=ratio,
        iterative_steps=how.steps,
        global_pruning=how.global_pruning,
        round_to=how.round_to,
        ignored_layers=[pruned.classifier],  # its outputs are the classes
        customized_pruners={nn.GroupNorm: GroupNormPruner()},
    )
    for _ in range(how.steps):  # each step re-estimates importance on the model the last one left
        _gradients(pruned, batch)
        pruner.step()
    pruned.zero_grad(set_to_none=True)
    return pruned


def prune_model(model: Classifier, how: How, batch: tuple[torch.Tensor, torch.Tensor]) -> Classifier:
    """The pruned copy of `model` closest to (and not above) `how.keep` of its MACs or parameters."""
    if not model.widths():
        raise EdgekitError(
            f"architecture '{model.spec.arch}' cannot be pruned: its widths() gives no options "
            "to rebuild a pruned model from"
        )
    shape = tuple(batch[0].shape[1:])
    measure = METRICS[how.metric]
    base = measure(model, shape)
    goal = how.keep * base
    aim = goal * (1 - CLOSE_ENOUGH / 2)  # the middle of the accepted band, so a near miss lands inside it
    # torch-pruning takes a fraction of channels; what a fraction costs depends on which channels go, so
    # search it. Each trial builds the graph afresh (a pruner cannot be copied): guesses assume MACs and
    # params shrink as (1 - ratio)². Near 1 torch-pruning refuses groups it would empty; the search then
    # just moves back down, keeping the largest result at or under the goal.
    lo, hi, best, best_value, smallest = (0.0, base), None, None, -1, base
    # Within one channel of the widest layer, a narrower bracket would rarely change the result.
    resolution = 1 / max(
        getattr(m, "out_channels", 0) or getattr(m, "out_features", 1) for m in model.modules()
    )
    ratio = 1 - (aim / base) ** 0.5
    for _ in range(SEARCH_ITERS):
        candidate = _pruned_copy(model, ratio, how, batch)
        value = measure(candidate, shape)
        smallest = min(smallest, value)
        if value <= goal and value > best_value:
            best, best_value = candidate, value
        if goal * (1 - CLOSE_ENOUGH) <= value <= goal:
            break
        if value > goal:
            lo = (ratio, value)
        else:
            hi = (ratio, value)
        ratio = _next_ratio(lo, hi, aim, resolution)
        if ratio is None:
            break
    if best is None:
        rounded = f" with --round-to {how.round_to}" if how.round_to else ""
        raise EdgekitError(
            f"--{how.metric} {how.keep}: out of reach; pruning this model{rounded} kept at least "
            f"{smallest / base:.3f} of its {how.metric}"
        )
    return rebuild(best)


def _next_ratio(lo: tuple[float, float], hi: tuple[float, float] | None, goal: float, resolution: float):
    """Interpolate √value linearly in the ratio between the bracket's ends, kept inside its middle half.

    Without an end under the goal yet, extrapolate from the last one above it. None: nothing left to try.
    """
    if hi is None:
        ratio = 1 - (1 - lo[0]) * (goal / lo[1]) ** 0.5
        return min(max(ratio, lo[0] + 0.01), MAX_RATIO) if lo[0] < MAX_RATIO else None
    width = hi[0] - lo[0]
    if width < resolution:
        return None
    guess = lo[0] + width * (lo[1] ** 0.5 - goal**0.5) / max(lo[1] ** 0.5 - hi[1] ** 0.5, 1e-12)
    return min(max(guess, lo[0] + width / 4), hi[0] - width / 4)


def rebuild(pruned: Classifier) -> Classifier:
    """The pruned model built from plain options (what a checkpoint stores), with its weights."""
    return pruned.spec.with_options(pruned.widths()).load(pruned.state_dict(), "the pruned model").train()


@torch.no_grad()
def accuracy(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], mean, std) -> float:
    loader = DeviceLoader(*split, batch_size=eval_batch(torch.device("cpu")), mean=mean, std=std)
    model.eval()
    correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    return correct / max(len(split[1]), 1)


def _figures(model: nn.Module, data: Prepared, ckpt: dict[str, Any], shape: tuple[int, ...]) -> dict:
    return {
        "params": count_params(model),
        "macs": count_macs(model, shape),
        "val_acc": accuracy(model, data.val, ckpt["mean"], ckpt["std"]) if data.has_val else None,
        "test_acc": accuracy(model, data.test, ckpt["mean"], ckpt["std"]),
    }


def _finetune_recipe(run_dir: Path, options: dict, epochs: int, lr: float | None, overrides) -> Recipe:
    """The source run's recipe with the model's (pruned) options, the fine-tune epochs and lr, overrides."""
    source = Run(run_dir).recipe_file
    raw = Run(run_dir).raw_recipe()
    raw["name"] = f"{run_dir.name}-pruned"
    raw["model"] = {"arch": raw["model"]["arch"], **options}
    raw["train"]["epochs"] = epochs
    if lr is not None:
        raw["train"]["optimizer"]["lr"] = lr
    apply_overrides(raw, list(overrides), str(source))
    return validate(raw, f"{source} (fine-tune of the pruned model)")


def _source(run_dir: Path) -> tuple[Classifier, dict[str, Any], Prepared]:
    """A run's best.pt as a model, the checkpoint, and the data it was trained on."""
    run = Run(run_dir)
    ckpt = load_checkpoint(run.best)
    model = from_checkpoint(ckpt, run.best).train()
    return model, ckpt, prepare_for(run.recipe())


def prune_run(
    run: Path,
    how: How,
    finetune_epochs: int = 30,
    lr: float | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    runs_dir: Path | None = None,
    console: Console | None = None,
) -> Path:
    """Prune a run's best.pt to `how`, fine-tune it with the run's recipe; returns the new run folder."""
    from edgekit.train.run import start_recipe

    console = console or Console(quiet=True)
    check(how, finetune_epochs, lr)
    run_dir = run_dir_of(run)
    model, ckpt, data = _source(run_dir)
    _finetune_recipe(run_dir, ckpt["options"], finetune_epochs, lr, overrides)  # bad overrides fail here
    shape = (ckpt["in_channels"], ckpt["image_size"], ckpt["image_size"])
    batch = next(iter(DeviceLoader(*data.train, batch_size=GRAD_IMAGES, mean=ckpt["mean"], std=ckpt["std"])))
    before = _figures(model, data, ckpt, shape)
    pruned = prune_model(model, how, batch)
    after = _figures(pruned, data, ckpt, shape)
    report = {
        "run": str(run_dir),
        **{k: v for k, v in asdict(how).items() if k not in ("metric", "keep")},
        "target": {how.metric: how.keep},
        "kept": {k: round(after[k] / before[k], 4) for k in ("params", "macs")},
        "before": before,
        "pruned": after,  # before fine-tuning; the summary's own figures are after it
    }
    recipe = _finetune_recipe(run_dir, pruned.spec.options, finetune_epochs, lr, overrides)
    console.print(
        f"pruned {run_dir}: {before['params']:,} → {after['params']:,} parameters, "
        f"{before['macs']:,} → {after['macs']:,} MACs; fine-tuning {recipe.train.epochs} epochs"
    )
    origin = {"pruned_from": report}
    out = start_recipe(recipe, runs_dir or run_dir.parent, console, pruned.state_dict(), origin)
    console.print(_table(report, Run(out).summary()))
    return out


def _table(report: dict, summary: dict) -> Table:
    columns = [Column(name, justify="right") for name in ("", "params", "MACs", "val acc", "test acc")]
    table = Table(*columns, title=f"pruned {report['run']}")
    rows = {"before": report["before"], "pruned": report["pruned"], "fine-tuned": summary}
    for name, row in rows.items():
        acc = [f"{row[k]:.2%}" if row.get(k) is not None else "—" for k in ("val_acc", "test_acc")]
        table.add_row(name, f"{row['params']:,}", f"{row['macs']:,}", *acc)
    return table
