"""Optimizers (`OPTIMIZERS`) and learning-rate schedules (`SCHEDULERS`), each with its recipe params."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau

from edgekit.recipe_schema import bind
from edgekit.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
bind(("train", "optimizer"), OPTIMIZERS)
bind(("train", "scheduler"), SCHEDULERS)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The optimizers below step with foreach=True: torch picks it by itself only for CUDA tensors, and on CPU
# the same arithmetic over whole lists of a tiny model's tensors took 0.67 instead of 0.90 ms per step
# (fashion/r2k, one thread), the results bit for bit the same.


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay only weight matrices and kernels: norm scales and biases (1-d tensors) are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class SGDParams(_Params):
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)


@OPTIMIZERS.register("sgd", SGDParams)
def sgd(p: SGDParams, model: nn.Module) -> torch.optim.Optimizer:
    nesterov = p.nesterov and p.momentum > 0  # torch refuses nesterov without momentum
    groups = param_groups(model, p.weight_decay)
    return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=nesterov, foreach=True)


class AdamWParams(_Params):
    lr: float = Field(3e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.01, ge=0)


@OPTIMIZERS.register("adamw", AdamWParams)
def adamw(p: AdamWParams, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, p.weight_decay)
    return torch.optim.AdamW(groups, lr=p.lr, betas=p.betas, eps=p.eps, foreach=True)


class Schedule:
    """An LR schedule stepped after every batch, plus (for `plateau`) a reduction after every epoch.

    Per-batch schedules are closed-form in the step count, so resuming, or extending a finished run to
    a larger `train.epochs`, rebuilds the schedule for the new total and jumps to the saved step.
    """

    def __init__(
        self,
        per_step: LambdaLR | OneCycleLR | None,
        plateau: ReduceLROnPlateau | None = None,
        warmup_steps: int = 0,
    ):
        self.per_step, self.plateau, self.warmup_steps = per_step, plateau, warmup_steps
        self.steps = 0

    def _stepping(self) -> bool:
        # With plateau, the per-step part is only the warm-up; afterwards the plateau owns the LR.
        return self.per_step is not None and (self.plateau is None or self.steps < self.warmup_steps)

    def after_batch(self) -> None:
        stepping = self._stepping()
        self.steps += 1
        if stepping:
            self.per_step.step()

    def after_epoch(self, metric: float) -> None:
        if self.plateau is not None and self.steps >= self.warmup_steps:
            self.plateau.step(metric)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])
        if self._stepping() or (self.per_step is not None and self.plateau is None):
            self.per_step.last_epoch = self.steps - 1
            with warnings.catch_warnings():  # torch warns that no optimizer step came first: intended
                warnings.simplefilter("ignore", UserWarning)
                self.per_step.step()  # sets the LR from the closed form at the saved step


class WarmupParams(_Params):
    warmup_epochs: float = Field(0.0, ge=0)


def _lambda(optimizer, warmup_steps: int, after: Callable[[int], float]) -> LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return after(step - warmup_steps)

    return LambdaLR(optimizer, factor)


class CosineParams(WarmupParams):
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


@SCHEDULERS.register("cosine", CosineParams)
def cosine(p: CosineParams, optimizer, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    warm = round(p.warmup_epochs * steps_per_epoch)
    span = max(1, epochs * steps_per_epoch - warm)

    def after(step: int) -> float:
        return p.min_lr_ratio + (1 - p.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(step, span) / span))

    return Schedule(_lambda(optimizer, warm, after))


class StepParams(WarmupParams):
    step_size: int = Field(30, ge=1, description="epochs between LR drops")
    gamma: float = Field(0.1, gt=0, le=1)


@SCHEDULERS.register("step", StepParams)
def step(p: StepParams, optimizer, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    warm = round(p.warmup_epochs * steps_per_epoch)
    return Schedule(_lambda(optimizer, warm, lambda s: p.gamma ** (s // (p.step_size * steps_per_epoch))))


@SCHEDULERS.register("constant", WarmupParams)
def constant(p: WarmupParams, optimizer, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    return Schedule(_lambda(optimizer, round(p.warmup_epochs * steps_per_epoch), lambda s: 1.0))


class PlateauParams(WarmupParams):
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(10, ge=0)
    threshold: float = Field(1e-4, ge=0)
    min_lr: float = Field(0.0, ge=0)


@SCHEDULERS.register("plateau", PlateauParams)
def plateau(p: PlateauParams, optimizer, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    warm = round(p.warmup_epochs * steps_per_epoch)
    reduce = ReduceLROnPlateau(
        optimizer, mode=mode, factor=p.factor, patience=p.patience, threshold=p.threshold, min_lr=p.min_lr
    )
    return Schedule(_lambda(optimizer, warm, lambda s: 1.0) if warm else None, reduce, warm)


class OneCycleParams(_Params):
    pct_start: float = Field(0.3, gt=0, lt=1)
    div_factor: float = Field(25.0, gt=1)
    final_div_factor: float = Field(1e4, gt=1)


@SCHEDULERS.register("onecycle", OneCycleParams)
def onecycle(p: OneCycleParams, optimizer, epochs: int, steps_per_epoch: int, mode: str) -> Schedule:
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return Schedule(
        OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=epochs * steps_per_epoch + 1,
            pct_start=p.pct_start,
            div_factor=p.div_factor,
            final_div_factor=p.final_div_factor,
        )
    )
