"""Objectives: what one training step minimises, returning (loss, logits) so the loop never branches on KD."""

from __future__ import annotations

import torch
from torch import nn

from edgekit.train.losses import LOSSES, CEParams


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
