"""Objectives: what one training step minimises, returning (loss, logits) so the loop never branches on KD."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel
from torch import nn

from edgekit.train.losses import KD_LOSSES, LOSSES, CEParams


class Supervised:
    """Plain supervised learning: the student's logits against the (possibly soft) labels."""

    def __init__(self, label_smoothing: float = 0.0):
        self.loss = LOSSES.get("ce").fn
        self.params = CEParams(label_smoothing=label_smoothing)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return self.loss(logits, y, self.params), logits


class Distill:
    """Knowledge distillation: the frozen teacher sees the very same augmented batch as the student."""

    def __init__(self, teacher: nn.Module, method: str, params: BaseModel):
        self.teacher, self.method = teacher, method
        self.loss = KD_LOSSES.get(method, "distill.method").fn
        self.params = params
        # The teacher's logits for the batch just drawn, looked up instead of computed (a TeacherBank).
        self.precomputed: Callable[[], torch.Tensor] | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # inside the loop's autocast: the teacher runs in mixed precision on CUDA
            teacher_logits = self.precomputed() if self.precomputed is not None else self.teacher(x)
        logits = model(x)
        return self.loss(logits, teacher_logits, y, self.params), logits
