"""Training losses: `LOSSES` (supervised: ce) and `KD_LOSSES` (distillation: hinton, dkd, zscore, dist).

A distillation loss is f(student_logits, teacher_logits, targets, params) → scalar. Every method mixes
cross-entropy on the labels with its distillation term as `(1 - alpha) * CE + alpha * KD`, so `alpha=0`
is plain supervised training. Adding a method is one registered function here plus a golden-value test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from edgekit.recipe_schema import bind
from edgekit.registry import Registry

LOSSES = Registry("loss")
KD_LOSSES = Registry("distillation method")
bind(("distill",), KD_LOSSES)


class CEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@LOSSES.register("ce", CEParams)
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, p: CEParams) -> torch.Tensor:
    """Cross-entropy; `targets` are class indices, or class probabilities after mixup/cutmix."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=p.label_smoothing)


class KDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(0.9, ge=0, le=1)  # weight of the distillation term; 1 - alpha goes to CE
    temperature: float = Field(4.0, gt=0)


class DKDParams(KDParams):
    alpha: float = Field(0.5, ge=0, le=1)
    tckd: float = Field(1.0, ge=0)  # the paper's α: target-class KD weight
    nckd: float = Field(8.0, ge=0)  # the paper's β: non-target-class KD weight


def _mix(student: torch.Tensor, targets: torch.Tensor, kd: torch.Tensor, alpha: float) -> torch.Tensor:
    if alpha == 1:
        return kd
    return (1 - alpha) * F.cross_entropy(student, targets) + alpha * kd


def _soft_kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over the batch."""
    log_s = F.log_softmax(student / t, dim=1)
    log_t = F.log_softmax(teacher / t, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * t * t


@KD_LOSSES.register("hinton", KDParams)
def hinton(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, p: KDParams) -> torch.Tensor:
    """Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015): KL between
    temperature-softened teacher and student distributions, scaled by T² so its gradients keep their
    size as T changes."""
    student, teacher = student.float(), teacher.float()
    return _mix(student, targets, _soft_kl(student, teacher, p.temperature), p.alpha)


@KD_LOSSES.register("dkd", DKDParams)
def dkd(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, p: DKDParams) -> torch.Tensor:
    """Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022): KD split into target-class KD
    (KL of the binary target/other distributions) and non-target-class KD (KL among the other classes,
    the target removed), weighted separately (tckd=α, nckd=β), both scaled by T²."""
    student, teacher = student.float(), teacher.float()
    t = p.temperature
    label = targets.argmax(1) if targets.ndim == 2 else targets  # mixup: the dominant class
    gt = F.one_hot(label, student.shape[1]).bool()
    p_s, p_t = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
    binary_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    binary_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    tckd = F.kl_div(binary_s.log(), binary_t.log(), reduction="batchmean", log_target=True) * t * t
    # Masking the target logit with a large negative number removes it from the softmax.
    masked_s = student / t - 1000.0 * gt
    masked_t = teacher / t - 1000.0 * gt
    nckd = (
        F.kl_div(
            F.log_softmax(masked_s, dim=1),
            F.log_softmax(masked_t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )
    return _mix(student, targets, p.tckd * tckd + p.nckd * nckd, p.alpha)


def zscore(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + eps)


@KD_LOSSES.register("zscore", KDParams)
def zscore_kd(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, p: KDParams
) -> torch.Tensor:
    """Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024): z-score the student's
    and the teacher's logits before softening, so the student matches the teacher's logit
    *relations* rather than their scale (a small student cannot reach a large teacher's logit range)."""
    student, teacher = student.float(), teacher.float()
    kd = _soft_kl(zscore(student), zscore(teacher), p.temperature)
    return _mix(student, targets, kd, p.alpha)


class DISTParams(KDParams):
    alpha: float = Field(0.5, ge=0, le=1)
    temperature: float = Field(1.0, gt=0)  # the paper's τ = 1
    inter: float = Field(1.0, ge=0)  # the paper's β: weight of the per-image (inter-class) relation
    intra: float = Field(1.0, ge=0)  # the paper's γ: weight of the per-class (intra-class) relation


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@KD_LOSSES.register("dist", DISTParams)
def dist(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, p: DISTParams) -> torch.Tensor:
    """Huang et al., "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022): match the
    *relations* of the softened predictions, not their values: 1 − Pearson correlation between student
    and teacher per image (inter-class, weight β) and per class across the batch (intra-class, γ), × τ².
    Correlation ignores shift and scale, so a small student is not pushed to the teacher's exact
    confidence, which is what the paper finds makes a large capacity gap bridgeable."""
    student, teacher = student.float(), teacher.float()
    t = p.temperature
    y_s, y_t = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
    inter = 1 - _pearson_rows(y_s, y_t).mean()
    intra = 1 - _pearson_rows(y_s.T, y_t.T).mean()
    return _mix(student, targets, (p.inter * inter + p.intra * intra) * t * t, p.alpha)
