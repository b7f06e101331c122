"""Teachers for distillation: rebuilt from their checkpoints, checked against the student's data, frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from edgekit.errors import EdgekitError
from edgekit.models import from_checkpoint
from edgekit.runs import Run, load_checkpoint
from edgekit.train.losses import KD_LOSSES
from edgekit.train.objectives import Distill


class Teacher(nn.Module):
    """A frozen model that takes the *student's* normalized batch.

    The student's batch was normalized with the student's mean/std; a teacher trained on another split
    or dataset of the same shape expects its own. Normalization is affine, so converting is exact:
    x_teacher = (x_student · std_s + mean_s − mean_t) / std_t.
    """

    def __init__(self, model: nn.Module, source: Path, student_stats, teacher_stats):
        super().__init__()
        self.model, self.source = folded(model), source
        (mean_s, std_s), (mean_t, std_t) = student_stats, teacher_stats
        view = (1, -1, 1, 1)
        self.register_buffer("scale", (torch.tensor(std_s) / torch.tensor(std_t)).view(view))
        self.register_buffer(
            "shift", ((torch.tensor(mean_s) - torch.tensor(mean_t)) / torch.tensor(std_t)).view(view)
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:  # a teacher never leaves eval mode (BN, dropout)
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def folded(model: nn.Module) -> nn.Module:
    """A copy of the frozen `model` with each BatchNorm folded into the conv before it: the same function to
    float rounding, one layer fewer to run. A live teacher (augmentation with no finite set of views to
    bank) is most of a tiny student's step (bench/teacher_fold.md)."""
    model.eval()  # folding uses the running statistics, as eval mode does
    try:
        return fuse(model)  # torch.fx: finds conv → BN pairs in any traceable model, and copies it
    except Exception:  # noqa: BLE001  a model fx cannot trace (data-dependent control flow) teaches unfolded
        return model


def checkpoint_of(path: Path) -> Path:
    """The best checkpoint of a run folder, or the checkpoint file itself."""
    path = Path(path)
    if path.suffix == ".pt":
        if not path.is_file():
            raise EdgekitError(f"distill.teacher = '{path}': no such checkpoint")
        return path
    if not path.exists():
        raise EdgekitError(f"distill.teacher = '{path}': no such run folder (train the teacher first)")
    best = Run.open(path).best
    if not best.is_file():
        raise EdgekitError(f"distill.teacher = '{path}': the run has no {best.name} yet")
    return best


def load_teacher(path: Path, student: dict[str, Any], device: torch.device) -> Teacher:
    """Rebuild a teacher from what its checkpoint holds; refuse one that cannot see the student's data."""
    file = checkpoint_of(path)
    ckpt = load_checkpoint(file)
    for key in ("num_classes", "in_channels", "image_size", "class_names"):
        if ckpt.get(key) != student[key]:
            raise EdgekitError(
                f"distill.teacher = '{path}': teacher {key} is {ckpt.get(key)!r} but the student's data "
                f"has {student[key]!r}"
            )
    model = from_checkpoint(ckpt, file)
    stats = ((student["mean"], student["std"]), (ckpt["mean"], ckpt["std"]))
    return Teacher(model, file, *stats).to(device)


class Ensemble(nn.Module):
    """Several teachers act as one: their logits are averaged."""

    def __init__(self, teachers: list[Teacher]):
        super().__init__()
        self.members = nn.ModuleList(teachers)

    def train(self, mode: bool = True) -> Ensemble:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(x).float() for t in self.members]).mean(0)


@torch.no_grad()
def accuracy(model: nn.Module, loader) -> float:
    correct, seen = 0, 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        seen += len(y)
    return correct / max(seen, 1)


def distillation(
    section, student: dict[str, Any], val, device: torch.device, split: str = "val"
) -> tuple[Distill, dict[str, Any]]:
    """The recipe's `distill:` as an objective, after checking the teachers on the student's val split
    (`split` names what `val` holds: a run without a val split checks them on its training images).

    A teacher near chance almost always means weights that were not loaded or preprocessing that does not
    match; distilling from it silently trains the student towards noise, so the run stops instead.
    """
    teachers = [load_teacher(Path(p), student, device) for p in section.teachers()]
    teacher = teachers[0] if len(teachers) == 1 else Ensemble(teachers)
    each = [accuracy(t, val) for t in teachers]
    combined = accuracy(teacher, val) if len(teachers) > 1 else each[0]
    floor = section.min_teacher_acc if section.min_teacher_acc is not None else 2 / student["num_classes"]
    for t, acc in zip(teachers, each, strict=True):
        if acc < floor:
            raise EdgekitError(
                f"distill.teacher = '{t.source}': scores {acc:.1%} on the student's {split} split, below "
                f"{floor:.1%} (near chance: wrong weights or preprocessing?); set distill.min_teacher_acc "
                "to accept it"
            )
    entry = KD_LOSSES.get(section.method, "distill.method")
    params = entry.params.model_validate(section.model_extra or {})
    info = {
        "method": section.method,
        "params": params.model_dump(mode="json"),
        "teachers": [str(t.source) for t in teachers],
        "teacher_val_acc": each,  # on `checked_on`: val, or train when the run has no val split
        "ensemble_val_acc": combined,
        "checked_on": split,
    }
    return Distill(teacher, section.method, params), info
