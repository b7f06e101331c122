"""A teacher's logits for every view of every training image, computed once, so distilling costs what
training alone does.

Whole-pixel crops and mirror flips draw each image from a finite set of views ((2·pad + 1)² × 2: 50
for a 2-pixel crop with flips), so a 300-epoch run asks the frozen teacher about the same 50 views six
times over, and an ensemble of seven teachers costs six times the student's own step. The bank asks
once per view and looks the answer up: the same logits, not an approximation.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekit.data.loader import DeviceLoader

CHUNK = 128  # images per teacher forward while filling the bank: on CPU, 1024 ran at half the speed
MAX_BYTES = 1 << 30  # beyond this a bank costs more memory than a small-data run should


class TeacherBank:
    """Logits (images, views, classes) of `teacher` on every view `loader` can draw; `current()` gives
    those of the batch the loader yielded last."""

    def __init__(self, teacher: nn.Module, loader: DeviceLoader):
        self.loader = loader
        views = loader.view_count()
        with torch.no_grad():
            per_view = [
                torch.cat(
                    [
                        teacher(loader.render(loader.images[i : i + CHUNK], v)).float()
                        for i in range(0, len(loader.images), CHUNK)
                    ]
                )
                for v in range(views)
            ]
        self.logits = torch.stack(per_view, dim=1)

    def current(self) -> torch.Tensor:
        index, views = self.loader.drawn
        return self.logits[index, views]


def worthwhile(loader: DeviceLoader, epochs: int, num_classes: int, world: int = 1) -> bool:
    """A bank pays when it asks the teacher fewer times than the run would (views < epochs per rank's
    share) and fits in memory; augmentation with continuous draws (rotation, zoom, erasing, mixing) has
    no finite set of views to bank."""
    views = loader.view_count()
    if views is None:
        return False
    fits = len(loader.images) * views * num_classes * 4 <= MAX_BYTES
    return fits and views * world < epochs
