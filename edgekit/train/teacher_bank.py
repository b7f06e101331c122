"""A teacher's logits for every view of every training image, computed once, so distilling costs little
more than training alone.

Whole-pixel crops and mirror flips draw each image from a finite set of views ((2·pad + 1)² × 2: 50
for a 2-pixel crop with flips), so a 300-epoch run asks the frozen teacher about the same 50 views six
times over, and an ensemble of seven teachers costs six times the student's own step. The bank asks
once per view and looks the answer up: the same logits, not an approximation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.data.cache import cache_path, cached
from edgekit.data.loader import DeviceLoader
from edgekit.data.sources import file_fingerprint

CHUNK = 128  # images per teacher forward while filling the bank: on CPU, 1024 ran at half the speed
MAX_BYTES = 1 << 30  # beyond this a bank costs more memory than a small-data run should


class TeacherBank:
    """Logits (images, views, classes) of `teacher` on every view `loader` can draw; `current()` gives
    those of the batch the loader yielded last.

    With an `identity` (see `identity()`: the teachers' and the training images' fingerprints) the bank is
    kept in edgekit's cache, so the students of one teacher (seeds, sweep trials, a ladder) fill it once
    between them.
    """

    def __init__(self, teacher: nn.Module, loader: DeviceLoader, identity: dict | None = None):
        self.loader = loader
        if identity is None:
            self.logits, self.reused = _fill(teacher, loader), False
            return
        # The logits also depend on the student's normalization (the teacher converts from it) and on the
        # views the augmentation draws.
        a = loader.augment
        key = {
            "kind": "teacher_bank",
            **identity,
            "mean": loader.mean.flatten().tolist(),
            "std": loader.std.flatten().tolist(),
            "views": {"crop_padding": a.crop_padding, "hflip": a.hflip},
        }
        self.reused = cache_path(key).is_file()
        filled = cached(key, lambda: {"logits": _fill(teacher, loader).cpu()})["logits"]
        self.logits = filled.to(loader.device)

    def current(self) -> torch.Tensor:
        index, views = self.loader.drawn_views()
        return self.logits[index, views]


def _fill(teacher: nn.Module, loader: DeviceLoader) -> torch.Tensor:
    with torch.no_grad():
        per_view = [
            torch.cat(
                [
                    teacher(loader.render(loader.images[i : i + CHUNK], v)).float()
                    for i in range(0, len(loader.images), CHUNK)
                ]
            )
            for v in range(loader.view_count())
        ]
    return torch.stack(per_view, dim=1)


def identity(checkpoints: list[Path], data_fingerprint: str) -> dict:
    """What names a bank: the teachers' checkpoint files (a retrained teacher is a new file) and the
    training split (another split or cap is other images), by the fingerprints the project already keeps."""
    return {"teachers": file_fingerprint(checkpoints), "data": data_fingerprint}


def worthwhile(loader: DeviceLoader, epochs: int, world: int = 1) -> bool:
    """A bank pays when it asks the teacher fewer times than the run would (views < epochs per rank's
    share) and fits in memory; augmentation with continuous draws (rotation, zoom, erasing, mixing) has
    no finite set of views to bank."""
    views = loader.view_count()
    if views is None:
        return False
    fits = len(loader.images) * views * loader.num_classes * 4 <= MAX_BYTES
    return fits and views * world < epochs


def bank_if_worthwhile(
    objective, train: DeviceLoader, epochs: int, world: int, identity: dict
) -> dict[str, Any] | None:
    """Give a distillation objective a TeacherBank when it pays (`worthwhile`); what was
    banked, for the run's summary, or None."""
    if not worthwhile(train, epochs, world):
        return None
    started = time.perf_counter()
    bank = TeacherBank(objective.teacher, train, identity)
    objective.precomputed = bank.current
    seconds = round(time.perf_counter() - started, 2)
    return {"views": bank.logits.shape[1], "seconds": seconds, "reused": bank.reused}
