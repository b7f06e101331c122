"""Epochs over an objective: AMP, channels_last, compile, EMA, early stopping, checkpoints, resume."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from edgekit.data.loader import DeviceLoader
from edgekit.errors import EdgekitError
from edgekit.runs import BEST_FILE, LAST_FILE, save_checkpoint
from edgekit.train import ddp
from edgekit.train.optim import Schedule
from edgekit.train.track import Tracker


class NonFiniteLoss(EdgekitError):
    """The loss became NaN or inf; the run stops and keeps its last good checkpoint."""


@dataclass
class State:
    """Everything a training step touches, and everything a checkpoint must restore."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    objective: Any
    train: DeviceLoader
    val: DeviceLoader
    generator: torch.Generator
    device: torch.device
    epochs: int
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    ema: AveragedModel | None = None
    raw_val: bool = False  # with an EMA: also score the raw weights on val (track.raw_val)
    clip_grad: float | None = None
    channels_last: bool = False
    net: nn.Module | None = None  # what the training forward runs through: DDP-wrapped and/or compiled model
    monitor: str = "val_acc"
    select: str = "best"  # best.pt: the best epoch by `monitor`, or the last (train.select)
    val_every: int = 1  # val is scored every this many epochs and at the last (train.val_every)
    patience: int | None = None
    min_delta: float = 0.0
    epoch: int = 0
    best: float | None = None
    best_epoch: int = 0
    stale: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # arch, options, data stats: plain checkpoint data

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    @property
    def kept_epoch(self) -> int:
        """The epoch whose weights best.pt holds."""
        return self.epoch if self.select == "last" else self.best_epoch


EMA_SPAN = 5  # the average's time constant is at most 1 / EMA_SPAN of the run's updates


def ema_decay(decay: float, updates: int) -> float:
    """The recipe's decay, lowered where its time constant 1 / (1 - decay) would exceed a fifth of the
    run's `updates`: the starting weights then keep under e^-5 (0.7%) of the average at the end.

    A fixed 0.999 over a 10-epoch run of 1,500 images (240 updates) would end 79% random weights and
    score at chance. Runs of 5,000 updates and more keep 0.999 exactly, early epochs included: a decay
    that warms up (TensorFlow's (1 + t) / (10 + t)) let 270 val images pick a checkpoint from epoch 108
    of 600 by noise, a point lower on the dev set (docs/recipes.md).
    """
    return min(decay, 1 - EMA_SPAN / max(updates, EMA_SPAN + 1))


class EMA(AveragedModel):
    """torch's AveragedModel (same state, same arithmetic) whose update reuses the tensor lists it gathers
    at the first one: torch's walks the module tree again at every step, 36 `parameters()` calls for
    `fashion/r2k`, and that was 1.0 of its 1.3 ms per update on CPU."""

    def update_parameters(self, model: nn.Module) -> None:
        cached = getattr(self, "_cache", None)  # (model, groups): a tuple, so nn.Module does not adopt it
        if cached is None or cached[0] is not model:
            cached = self._cache = (model, _paired_by_kind(self.module, model))
        with torch.no_grad():
            for averaged, current in cached[1]:
                if self.n_averaged == 0:
                    torch._foreach_copy_(averaged, current)
                else:
                    self.multi_avg_fn(averaged, current, self.n_averaged)
        self.n_averaged += 1


def _paired_by_kind(average: nn.Module, model: nn.Module) -> list[tuple[list, list]]:
    """The average's and the model's parameters and buffers, in matching lists per device and dtype (the
    foreach ops take one kind at a time; BatchNorm's batch counter is an integer)."""
    groups: dict[tuple, tuple[list, list]] = {}
    mine = [*average.parameters(), *average.buffers()]
    theirs = [*model.parameters(), *model.buffers()]
    for a, b in zip(mine, theirs, strict=True):
        pair = groups.setdefault((a.device, a.dtype), ([], []))
        pair[0].append(a.detach())
        pair[1].append(b.detach())
    return list(groups.values())


def make_ema(model: nn.Module, decay: float, updates: int) -> AveragedModel:
    """An exponential moving average of `model`'s weights and buffers over a run of `updates` steps."""
    return EMA(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(decay, updates)), use_buffers=True)


def autocast(s: State):
    if s.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=s.device.type, dtype=s.amp_dtype)


def in_layout(s: State, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


def train_epoch(s: State) -> dict[str, float]:
    s.model.train()
    net = s.net if s.net is not None else s.model
    loss_sum = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device)
    seen = 0
    bad = torch.zeros((), device=s.device)  # the last non-finite loss of the epoch (0: none)
    for x, y in s.train:
        with autocast(s):
            loss, logits = s.objective(net, in_layout(s, x), y)
        # Checked on the device and read back once per epoch: a per-step `if` would stall a GPU on a host
        # sync every step. The epoch's weights are then thrown away; the last checkpoint is before it.
        bad = torch.where(torch.isfinite(loss.detach()), bad, loss.detach().float())
        s.optimizer.zero_grad(set_to_none=True)
        _backward_and_step(s, loss)
        s.schedule.after_batch()
        labels = y.argmax(1) if y.ndim == 2 else y  # mixup/cutmix give soft labels
        loss_sum += loss.detach() * len(x)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(x)
    # Summed over ranks with the rest, so every rank stops together (one alone would hang the others).
    totals = ddp.total(
        torch.stack([loss_sum, correct, torch.tensor(float(seen), device=s.device), (bad != 0).float()])
    )
    if totals[3] > 0:
        raise NonFiniteLoss(
            f"loss became {bad.item() if bad != 0 else 'non-finite on another rank'} at epoch {s.epoch + 1}; "
            "stopped, last good checkpoint kept (try a lower train.optimizer.lr or train.clip_grad)"
        )
    totals = totals[:3]
    loss_sum, correct, seen = totals.tolist()  # over all ranks under DDP
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "seen": int(seen)}


def _backward_and_step(s: State, loss: torch.Tensor) -> None:
    if s.scaler is not None:  # fp16 AMP needs loss scaling; bf16 and fp32 do not
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(s.optimizer)
    else:
        loss.backward()
    if s.clip_grad is not None:
        nn.utils.clip_grad_norm_(s.model.parameters(), s.clip_grad)
    if s.scaler is not None:
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        s.optimizer.step()
    if s.ema is not None:
        s.ema.update_parameters(s.model)


@torch.no_grad()
def evaluate(s: State, loader: DeviceLoader, model: nn.Module | None = None) -> dict[str, float]:
    model = model or s.eval_model
    was_training = model.training
    model.eval()
    # Summed on the device and read once: a read per batch is a host sync per batch on a GPU.
    loss_sum = torch.zeros((), device=s.device, dtype=torch.float64)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    seen = 0
    for x, y in loader:
        with autocast(s):
            logits = model(in_layout(s, x)).float()
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(x)
    model.train(was_training)
    return {"loss": loss_sum.item() / seen, "acc": correct.item() / seen}


def _improved(s: State, value: float) -> bool:
    if s.best is None:
        return True
    return value > s.best + s.min_delta if s.monitor == "val_acc" else value < s.best - s.min_delta


def checkpoint_payload(s: State, for_best: bool = False) -> dict[str, Any]:
    """Tensors and plain data only, so `torch.load(weights_only=True)` reads it back."""
    payload = {**s.meta, "epoch": s.epoch, "best": s.best, "best_epoch": s.best_epoch, "stale": s.stale}
    if for_best:  # best.pt holds the weights to deploy: the EMA weights when EMA is on
        return {**payload, "model": s.eval_model.state_dict()}
    cuda_rng = torch.cuda.get_rng_state_all() if s.device.type == "cuda" else []
    return {
        **payload,
        "model": s.model.state_dict(),
        "ema": s.ema.state_dict() if s.ema is not None else None,
        "optimizer": s.optimizer.state_dict(),
        "schedule": s.schedule.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler is not None else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": cuda_rng, "loader": s.generator.get_state()},
    }


def restore(s: State, ckpt: dict[str, Any]) -> None:
    """Put a `last.pt` back into the state: weights, optimizer, schedule, scaler, EMA, RNG streams."""
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.schedule.load_state_dict(ckpt["schedule"])
    if s.ema is not None and ckpt.get("ema") is not None:
        s.ema.load_state_dict(ckpt["ema"])
    if s.scaler is not None and ckpt.get("scaler") is not None:
        s.scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if s.device.type == "cuda" and ckpt["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    s.generator.set_state(ckpt["rng"]["loader"])
    s.epoch, s.best, s.best_epoch, s.stale = ckpt["epoch"], ckpt["best"], ckpt["best_epoch"], ckpt["stale"]


def fit(s: State, run_dir: Path, tracker: Tracker) -> str:
    """Train until `s.epochs` or early stop; returns why it stopped. Writes last.pt every epoch, best.pt
    when an epoch scored on val improves on the best (or, under `select: last`, is due a score at all:
    without a val split, `data.val_fraction: 0`, no epoch is scored and the due ones are kept)."""
    has_val = len(s.val.labels) > 0
    while s.epoch < s.epochs:
        started = time.perf_counter()
        stats = train_epoch(s)
        s.epoch += 1
        due = s.epoch % s.val_every == 0 or s.epoch == s.epochs
        val, value = _score(s) if due and has_val else ({}, None)
        elapsed = time.perf_counter() - started
        tracker.log(
            {
                "epoch": s.epoch,
                "train_loss": stats["train_loss"],
                "train_acc": stats["train_acc"],
                **val,
                "lr": s.optimizer.param_groups[0]["lr"],
                "images_per_s": stats["seen"] / elapsed,
                "epoch_s": elapsed,
                "elapsed_s": time.perf_counter() - tracker.started,
            }
        )
        improved = value is not None and _judge(s, value)
        if ddp.is_main() and (improved or (due and s.select == "last")):
            save_checkpoint(run_dir / BEST_FILE, checkpoint_payload(s, for_best=True))
        if ddp.is_main():  # every rank holds the same weights; one writes them
            save_checkpoint(run_dir / LAST_FILE, checkpoint_payload(s))
        if s.patience is not None and s.stale >= s.patience:
            return f"early stop: {s.monitor} has not improved for {s.patience} epochs"
    return "finished"


def _score(s: State) -> tuple[dict[str, float], float]:
    """This epoch's val scores (with track.raw_val, the raw weights' beside the EMA's) and the monitored
    value, which steps the plateau schedule."""
    val = evaluate(s, s.val)
    # Rank 0's figure on every rank: BatchNorm statistics differ per rank, so val can too, and a rank
    # that lowered its lr, kept another best epoch or stopped alone would diverge or hang the others.
    value = ddp.from_main(val["acc"] if s.monitor == "val_acc" else val["loss"])
    s.schedule.after_epoch(value)
    scores = {"val_loss": val["loss"], "val_acc": val["acc"]}
    if s.raw_val and s.ema is not None:
        raw = evaluate(s, s.val, s.model)
        scores |= {"val_loss_raw": raw["loss"], "val_acc_raw": raw["acc"]}
    return scores, value


def _judge(s: State, value: float) -> bool:
    """Whether this scored epoch is the new best by `monitor`; `stale` counts the epochs since the best."""
    if _improved(s, value) and math.isfinite(value):
        s.best, s.best_epoch, s.stale = value, s.epoch, 0
        return True
    s.stale = s.epoch - s.best_epoch
    return False
