"""Training losses (`LOSSES`): each a registered function of (logits, targets, params)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from edgekit.registry import Registry

LOSSES = Registry("loss")


class CEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@LOSSES.register("ce", CEParams)
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, p: CEParams) -> torch.Tensor:
    """Cross-entropy; `targets` are class indices, or class probabilities after mixup/cutmix."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=p.label_smoothing)
