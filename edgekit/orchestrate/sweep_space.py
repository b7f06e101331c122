"""A sweep's search space: wandb's parameter distributions, each checked by its own params class and drawn
from by its own function, and a parameter of the sweep file read into one of them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import EdgekitError
from edgekit.recipe import describe
from edgekit.registry import Registry


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# wandb's parameter distributions that local search can draw from: each one's params class checks the
# keys it needs (min/max, values, mu/sigma, ...), and its function draws one value.
DISTRIBUTIONS = Registry("distribution")


class Constant(Strict):
    value: Any


class Categorical(Strict):
    values: list[Any] = Field(min_length=1)
    probabilities: list[float] | None = None

    @model_validator(mode="after")
    def _one_per_value(self) -> Categorical:
        p = self.probabilities
        if p is not None and (len(p) != len(self.values) or abs(sum(p) - 1) > 1e-6 or min(p) < 0):
            raise ValueError(f"probabilities {p} must be one per value, non-negative, summing to 1")
        return self


class Range(Strict):
    min: float
    max: float
    q: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class IntRange(Range):
    min: int
    max: int


class Normal(Strict):
    mu: float = 0.0
    sigma: float = Field(1.0, gt=0)
    q: float = Field(1.0, gt=0)


def _q(x: float, q: float) -> float:
    return round(round(x / q) * q, 10)


def _log(p: Range, rng) -> float:
    return math.exp(rng.uniform(math.log(p.min), math.log(p.max)))


_DRAWS = {
    "constant": (Constant, lambda p, rng: p.value),
    "categorical": (Categorical, lambda p, rng: p.values[rng.choice(len(p.values), p=p.probabilities)]),
    "int_uniform": (IntRange, lambda p, rng: int(rng.integers(p.min, p.max + 1))),
    "uniform": (Range, lambda p, rng: float(rng.uniform(p.min, p.max))),
    "q_uniform": (Range, lambda p, rng: _q(rng.uniform(p.min, p.max), p.q)),
    # wandb: log_uniform takes min/max as natural logs, *_values takes the values themselves.
    "log_uniform": (Range, lambda p, rng: math.exp(rng.uniform(p.min, p.max))),
    "log_uniform_values": (Range, _log),
    "q_log_uniform_values": (Range, lambda p, rng: _q(_log(p, rng), p.q)),
    "normal": (Normal, lambda p, rng: float(rng.normal(p.mu, p.sigma))),
    "q_normal": (Normal, lambda p, rng: _q(rng.normal(p.mu, p.sigma), p.q)),
    "log_normal": (Normal, lambda p, rng: math.exp(rng.normal(p.mu, p.sigma))),
}
for _name, (_params, _draw) in _DRAWS.items():
    DISTRIBUTIONS.register(_name, _params)(_draw)


@dataclass(frozen=True)
class Param:
    key: str  # dotted recipe key
    distribution: str
    options: BaseModel

    def draw(self, rng: np.random.Generator) -> Any:
        return DISTRIBUTIONS.get(self.distribution).fn(self.options, rng)


def _infer(raw: dict[str, Any]) -> str:
    """wandb's rule for a parameter without `distribution:`."""
    if "value" in raw:
        return "constant"
    if "values" in raw:
        return "categorical"
    if isinstance(raw.get("min"), int) and isinstance(raw.get("max"), int):
        return "int_uniform"
    return "uniform"


def parse_param(key: str, raw: dict[str, Any], source: str) -> Param:
    where = f"{source}: parameters.{key}"
    if key == "name":
        raise EdgekitError(f"{where}: the run name is set per trial; remove this parameter")
    options = dict(raw)
    name = options.pop("distribution", None) or _infer(raw)
    entry = DISTRIBUTIONS.get(str(name), f"{where}.distribution")
    try:
        return Param(key, entry.name, entry.params.model_validate(options))
    except ValidationError as e:
        raise EdgekitError(describe(e, entry.params, ("parameters", key), source)) from None
