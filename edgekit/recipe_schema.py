"""Recipe schema: the sections a YAML recipe holds, their defaults and bounds, and the registries its
choice sections pick from (recipe.py reads, overrides and validates files against it)."""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

# Sections whose selector key picks a registry entry; that entry's params class validates the rest of
# the section, so adding an architecture, dataset, optimizer or scheduler grows the schema by itself.
SELECTORS: dict[tuple[str, ...], str] = {
    ("data",): "dataset",
    ("model",): "arch",
    ("train", "optimizer"): "name",
    ("train", "scheduler"): "name",
    ("distill",): "method",
}
# Keys that may be `auto`: a value found when the run starts (`train.optimizer.lr: auto` runs the lr
# range test) and written into the run's recipe.yaml, so the run is reproducible without it.
AUTO: dict[tuple[str, ...], tuple[str, ...]] = {("train", "optimizer"): ("lr",)}
# Each registry binds itself to its section when its module is imported (`bind`), so this shared module
# imports no stage: the stages that read recipes import the registries they validate against.
REGISTRIES: dict[tuple[str, ...], Any] = {}


def bind(section: tuple[str, ...], registry: Any) -> None:
    """Make `registry` the one whose entries a recipe's `section` chooses from."""
    if section not in SELECTORS:
        raise ValueError(f"recipe section {'.'.join(section)} has no selector key")
    REGISTRIES[section] = registry


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Choice(BaseModel):
    """A section whose extra keys belong to the chosen registry entry (validated in `_validate_choices`)."""

    model_config = ConfigDict(extra="allow")


class DataSection(Choice):
    dataset: str = "digits"
    image_size: int | None = Field(None, ge=4, le=1024)
    # 0: no val split; every image trains (recipe.py: needs train.select: last, no early stopping or
    # plateau schedule), for a final model once the choices were made elsewhere (docs/recipes.md).
    val_fraction: float = Field(0.15, ge=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    split_seed: int = 0
    # At most N training images per class (seeded by split_seed, stratified), taken before val is carved:
    # small-data studies and learning curves. None: all of them.
    train_per_class: int | None = Field(None, ge=1)
    augment: dict[str, Any] = Field(default_factory=dict)  # validated by data.loader.AugmentParams


class ModelSection(Choice):
    arch: str = "lenet"


class OptimizerSection(Choice):
    name: str = "sgd"


class SchedulerSection(Choice):
    name: str = "cosine"


class DistillSection(Choice):
    # A run folder (its best.pt) or a checkpoint file; several teachers have their logits averaged.
    teacher: str | list[str] = Field(min_length=1)
    method: str = "hinton"
    # Refuse a teacher scoring below this on the student's val split (default: twice chance), the
    # symptom of unloaded weights or mismatched preprocessing.
    min_teacher_acc: float | None = Field(None, ge=0, le=1)
    # auto: the teacher's logits computed once per view when crops/flips draw finitely many (docs/train.md)
    precompute: Literal["auto", "never"] = "auto"

    def teachers(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)


class EarlyStop(Strict):
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainSection(Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    clip_grad: float | None = Field(None, gt=0)
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    # best.pt (the weights to deploy): the best epoch by `monitor`, or the last (fashion/base.yaml says why)
    select: Literal["best", "last"] = "best"
    early_stop: EarlyStop = Field(default_factory=EarlyStop)
    # Score val every N epochs and at the last (docs/recipes.md): best epoch, early stopping and the plateau
    # schedule see only the epochs scored; a long run under `select: last` need not pay for val each epoch.
    val_every: int = Field(1, ge=1)
    ema: float | None = Field(None, gt=0, lt=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over the global batch


WandbMode = Literal["disabled", "offline", "online"]


class TrackSection(Strict):
    # None: WANDB_MODE when it names a mode, else offline when no WANDB_API_KEY is set (never needs the
    # network), online when one is.
    wandb: WandbMode | None = None
    project: str = "edgekit"
    entity: str | None = None
    tags: list[str] = Field(default_factory=list)
    # With train.ema: also log the raw weights' val (val_acc_raw), which hyperband judges on (docs/sweeps.md)
    raw_val: bool = False


class Recipe(Strict):
    name: str | None = None
    seed: int = 0
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    distill: DistillSection | None = None  # knowledge distillation from teacher runs; None: plain training
    track: TrackSection = Field(default_factory=TrackSection)

    def wandb_mode(self) -> str:
        """The recipe's `track.wandb`; left unset, wandb's own WANDB_MODE switch when it names one of the
        three modes (WANDB_MODE=disabled on a machine without wandb trains without importing it), else
        online with a WANDB_API_KEY and offline without."""
        env = os.environ.get("WANDB_MODE")
        chosen = env if env in get_args(WandbMode) else None
        return self.track.wandb or chosen or ("online" if os.environ.get("WANDB_API_KEY") else "offline")

    def options(self, *section: str) -> dict[str, Any]:
        """The chosen registry entry's validated options (a choice section's keys that are its own)."""
        node: BaseModel = self
        for part in section:
            node = getattr(node, part)
        return dict(node.model_extra or {})

    def plain(self, *section: str) -> dict[str, Any]:
        node: Any = self.model_dump(mode="json")
        for part in section:
            node = node[part]
        return node
