"""A teacher's logits for every view of every training image, computed once, so distilling costs what
training alone does.

Whole-pixel crops and mirror flips draw each image from a finite set of views ((2·pad + 1)² × 2: 50
for a 2-pixel crop with flips), so a 300-epoch run asks the frozen teacher about the same 50 views six
times over, and an ensemble of seven teachers costs six times the student's own step. The bank asks
once per view and looks the answer up: the same logits, not an approximation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from edgekit.data.cache import cache_path, cached
from edgekit.data.loader import DeviceLoader

CHUNK = 128  # images per teacher forward while filling the bank: on CPU, 1024 ran at half the speed
MAX_BYTES = 1 << 30  # beyond this a bank costs more memory than a small-data run should


class TeacherBank:
    """Logits (images, views, classes) of `teacher` on every view `loader` can draw; `current()` gives
    those of the batch the loader yielded last.

    With `sources` (the teachers' checkpoint files) the bank is kept in edgekit's cache, keyed by the
    checkpoints' and the training images' contents, so the students of one teacher (seeds, sweep trials,
    a ladder) fill it once between them.
    """

    def __init__(self, teacher: nn.Module, loader: DeviceLoader, sources: list[Path] | None = None):
        self.loader = loader
        if sources is None:
            self.logits, self.reused = _fill(teacher, loader), False
            return
        key = _key(loader, sources)
        self.reused = cache_path(key).is_file()
        self.logits = cached(key, lambda: {"logits": _fill(teacher, loader).cpu()})["logits"].to(
            loader.device
        )

    def current(self) -> torch.Tensor:
        index, views = self.loader.drawn
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


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(loader: DeviceLoader, sources: list[Path]) -> dict:
    """What the logits depend on: the teachers' weights, the training images in their order, the
    student's normalization (the teacher converts from it) and the views the augmentation draws."""
    a = loader.augment
    return {
        "kind": "teacher_bank",
        "teachers": [_digest(Path(s).read_bytes()) for s in sources],
        "images": _digest(loader.images.cpu().numpy().tobytes()),
        "mean": loader.mean.flatten().tolist(),
        "std": loader.std.flatten().tolist(),
        "views": {"crop_padding": a.crop_padding, "hflip": a.hflip},
    }


def worthwhile(loader: DeviceLoader, epochs: int, num_classes: int, world: int = 1) -> bool:
    """A bank pays when it asks the teacher fewer times than the run would (views < epochs per rank's
    share) and fits in memory; augmentation with continuous draws (rotation, zoom, erasing, mixing) has
    no finite set of views to bank."""
    views = loader.view_count()
    if views is None:
        return False
    fits = len(loader.images) * views * num_classes * 4 <= MAX_BYTES
    return fits and views * world < epochs
