"""Sweep files (wandb's sweep format + `recipe:`): schema and the trials of grid/random search (the
search space itself: sweep_space.py)."""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, model_validator

import edgekit.train  # noqa: F401  (binds the train registries trial recipes are validated against)
from edgekit.errors import EdgekitError
from edgekit.orchestrate.sweep_space import Param, Strict, parse_param
from edgekit.recipe import describe, load
from edgekit.registry import Registry

# What a trial's summary.json holds that a sweep can rank by.
METRICS = ("val_acc", "test_acc", "test_loss", "best_val")


class Metric(Strict):
    name: Literal[METRICS] = "val_acc"
    # wandb's default goal is minimize; ours follows the metric, and the wandb config always states it.
    goal: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _goal_from_name(self) -> Metric:
        if self.goal is None:
            self.goal = "minimize" if self.name.endswith("loss") else "maximize"
        return self


class EarlyTerminate(Strict):
    """wandb's `early_terminate`; locally (method bayes) Optuna's HyperbandPruner applies it."""

    type: Literal["hyperband"]
    min_iter: int = Field(ge=1)  # the first rung, in epochs
    eta: int = Field(3, ge=2)  # at each rung, the best 1/eta go on
    max_iter: int | None = Field(None, ge=1)


PRUNED_FILE = "pruned.json"  # in a trial's run folder: stopped early by the sweep, never rerun


class SweepFile(Strict):
    recipe: str  # the base recipe, relative to the sweep file
    method: str
    metric: Metric = Field(default_factory=Metric)
    parameters: dict[str, dict[str, Any]] = Field(min_length=1)
    count: int | None = Field(None, ge=1)
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")
    description: str | None = None
    early_terminate: EarlyTerminate | None = None
    sampler_seed: int = 0  # random search draws the same trials every time, so a sweep can resume


# -------------------------------------------------------------------------------------------- methods
# Each search method turns the parameters into the list of trials (dicts of dotted key → value).
METHODS = Registry("sweep method")


@METHODS.register("grid")
def _grid(params: list[Param], count: int | None, seed: int, source: str) -> list[dict[str, Any]]:
    for p in params:
        if p.distribution not in ("constant", "categorical"):
            raise EdgekitError(
                f"{source}: parameters.{p.key}: grid search needs `values: [...]` (or `value:`), "
                f"not distribution '{p.distribution}'; use method: random to sample it"
            )
    choices = [p.options.values if p.distribution == "categorical" else [p.options.value] for p in params]
    trials = [dict(zip([p.key for p in params], combo, strict=True)) for combo in itertools.product(*choices)]
    return trials[:count] if count else trials


@METHODS.register("random")
def _random(params: list[Param], count: int | None, seed: int, source: str) -> list[dict[str, Any]]:
    if count is None:
        raise EdgekitError(f"{source}: method 'random' needs a number of trials: count: N, or --count N")
    rng = np.random.default_rng(seed)
    # One draw after another from one generator: a larger count keeps the earlier trials.
    return [{p.key: p.draw(rng) for p in params} for _ in range(count)]


@METHODS.register("bayes")
def _bayes(params: list[Param], count: int | None, seed: int, source: str) -> list[dict[str, Any]]:
    # Bayesian trials depend on earlier results: sweep_run.local_bayes proposes them as it goes.
    raise EdgekitError(f"{source}: method 'bayes' proposes its trials while it runs; none exist up front")


# --------------------------------------------------------------------------------------------- sweeps
@dataclass(frozen=True)
class Trial:
    name: str
    params: dict[str, Any]

    def overrides(self) -> list[str]:
        return [f"{k}={yaml_scalar(v)}" for k, v in self.params.items()]


@dataclass(frozen=True)
class Sweep:
    path: Path
    file: SweepFile
    params: list[Param]

    @property
    def name(self) -> str:
        return self.file.name or self.path.stem

    @property
    def recipe_path(self) -> Path:
        return Path(os.path.normpath(self.path.parent / self.file.recipe))

    @property
    def varying(self) -> list[str]:
        """The keys that differ between trials (constants stay out of names and tables)."""
        return [p.key for p in self.params if p.distribution != "constant"]

    def trial(self, params: dict[str, Any], prefix: str) -> Trial:
        return Trial(trial_name({k: params[k] for k in self.varying}, prefix), params)

    def trials(self, count: int | None = None) -> list[Trial]:
        """The trials of local search, named by index and values, each checked as a recipe."""
        draws = METHODS.get(self.file.method).fn(
            self.params, count or self.file.count, self.file.sampler_seed, str(self.path)
        )
        width = max(2, len(str(len(draws) - 1)))
        trials = [self.trial(p, f"{i:0{width}d}") for i, p in enumerate(draws)]
        for t in trials:
            check_trial(self, t)
        return trials

    def check_space(self) -> None:
        """For wandb's search: load one drawn trial, and every listed value of each parameter with it."""
        base = {p.key: p.draw(np.random.default_rng(self.file.sampler_seed)) for p in self.params}
        for p in self.params:
            for value in p.options.values if p.distribution == "categorical" else [base[p.key]]:
                params = {**base, p.key: value}
                check_trial(self, self.trial(params, "check"))


def read(path: Path, rank_on_test: bool = False) -> Sweep:
    """Read and validate a sweep file; its base recipe must exist and load.

    A test metric would make the test split choose the winner, after which it no longer measures unseen
    data: it takes `rank_on_test` (`--rank-on-test`), and the table then says so."""
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgekitError(f"{path}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise EdgekitError(f"{path}: expected a mapping with recipe, method, metric, parameters")
    try:
        file = SweepFile.model_validate(raw)
    except ValidationError as e:
        raise EdgekitError(describe(e, SweepFile, (), str(path))) from None
    METHODS.get(file.method, f"{path}: method")
    if file.metric.name.startswith("test") and not rank_on_test:
        raise EdgekitError(
            f"{path}: metric.name = {file.metric.name} ranks the trials on the test split, which then stops "
            "measuring unseen data; rank on val_acc or best_val, or pass --rank-on-test to do it knowingly"
        )
    sweep = Sweep(path, file, [parse_param(k, v, str(path)) for k, v in file.parameters.items()])
    if not sweep.recipe_path.is_file():
        raise EdgekitError(f"{path}: recipe: {sweep.recipe_path}: no such recipe file")
    return sweep


def check_trial(sweep: Sweep, trial: Trial) -> None:
    """Load the base recipe with the trial's values, so a bad key or value stops the sweep before it runs."""
    try:
        recipe = load(sweep.recipe_path, trial.overrides())
    except EdgekitError as e:
        raise EdgekitError(f"{sweep.path}: trial {trial.name}: {e}") from None
    if recipe.data.val_fraction == 0 and not sweep.file.metric.name.startswith("test"):
        raise EdgekitError(
            f"{sweep.path}: trial {trial.name}: data.val_fraction = 0 leaves no val split for "
            f"metric.name = {sweep.file.metric.name} to rank on; give the sweep a val split"
        )


def yaml_scalar(value: Any) -> str:
    """`value` as override text that the recipe's YAML parsing reads back unchanged."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("\n...").strip()


def trial_name(params: dict[str, Any], prefix: str) -> str:
    """`03_lr-0.01_weight_decay-0.0005`: the prefix keeps names unique, the values make them readable."""
    last = [k.rsplit(".", 1)[-1] for k in params]
    keys = [s if last.count(s) == 1 else k for s, k in zip(last, params, strict=True)]
    parts = [f"{k}-{_short(v)}" for k, v in zip(keys, params.values(), strict=True)]
    return re.sub(r"[^A-Za-z0-9._-]", "", "_".join([prefix, *parts]))[:100]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "x".join(_short(v) for v in value)
    return str(value)
