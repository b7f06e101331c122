"""Device-resident batches of a uint8 split, with whole-batch augmentation drawn from one generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator


class AugmentParams(BaseModel):
    """Training augmentation; every default is off."""

    model_config = ConfigDict(extra="forbid")

    crop_padding: int = Field(0, ge=0, le=64)  # random crop after zero padding: a shift of up to N px
    hflip: bool = False
    rotate: float = Field(0.0, ge=0, le=180)  # max degrees either way
    translate: float = Field(0.0, ge=0, le=0.5)  # max shift as a fraction of width/height
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range; > 1 enlarges the content
    erasing: float = Field(0.0, ge=0, le=1)  # probability of erasing a random rectangle per image
    mixup: float = Field(0.0, ge=0, le=10)  # Beta(alpha, alpha); 0 = off
    cutmix: float = Field(0.0, ge=0, le=10)  # Beta(alpha, alpha); 0 = off

    @model_validator(mode="after")
    def _check_scale(self) -> AugmentParams:
        low, high = self.scale
        if not 0.1 <= low <= high <= 10:
            raise ValueError(f"scale {list(self.scale)}: expected [low, high] with 0.1 <= low <= high <= 10")
        return self

    def warps(self) -> bool:
        """Rotation, translation or zoom: a continuous resampling, not a whole-pixel window."""
        return bool(self.rotate or self.translate or self.scale != (1.0, 1.0))

    def geometric(self) -> bool:
        return bool(self.crop_padding) or self.warps()


def _uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def affine(x: torch.Tensor, p: AugmentParams, generator: torch.Generator):
    """Rotate/scale/translate/crop-shift each image by its own random amount in one grid_sample.

    Returns the images and the whole-pixel crop shifts drawn (B, 2: x, y), or None without cropping.
    """
    b, _, h, w = x.shape
    angle = _uniform(-p.rotate, p.rotate, b, generator) * (math.pi / 180)
    zoom = _uniform(p.scale[0], p.scale[1], b, generator)
    # affine_grid works in [-1, 1] coordinates, so a shift of a fraction f of the width is 2f.
    shift = _uniform(-2 * p.translate, 2 * p.translate, 2 * b, generator).view(b, 2)
    pixels = None
    if p.crop_padding:
        # Whole-pixel shifts with zero fill are exactly a random crop of the zero-padded image.
        pixels = torch.randint(-p.crop_padding, p.crop_padding + 1, (b, 2), generator=generator)
        if not p.warps():
            return crop(x, pixels, p.crop_padding), pixels  # the draws above keep the generator's stream
        shift += 2 * pixels / torch.tensor([w, h])
    return warp(x, angle, zoom, shift), pixels


def crop(x: torch.Tensor, pixels: torch.Tensor, pad: int) -> torch.Tensor:
    """Each image shifted by its whole-pixel `pixels` (B, 2: x, y) with zero fill: its window of the
    zero-padded image. Exact where grid_sample's bilinear weights are only within float rounding of 0 and
    1, and on CPU 6x faster (0.28 against 1.7 ms for 64 28x28 images, one thread; the warp was a tenth of
    a `fashion/r2k` training step)."""
    b, _, h, w = x.shape
    windows = F.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)  # (B, C, rows, cols, h, w)
    rows, cols = (pixels.to(x.device) + pad).unbind(1)[::-1]
    return windows[torch.arange(b, device=x.device), :, rows, cols]


def warp(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each image rotated by `angle` (radians), zoomed by `zoom` and shifted by `shift` ([-1, 1] units)."""
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([cos, -sin, shift[:, 0], sin, cos, shift[:, 1]], dim=1).view(len(x), 2, 3)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def hflip(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror a random half of the batch; returns the images and which were mirrored (B,)."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return mirror(x, flip), flip


def mirror(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def erase(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017): zero one random rectangle (2-33% of the area, aspect
    0.3-3.3, as torchvision's RandomErasing) in each image with `probability`. On normalized input
    zero is the mean colour."""
    b, _, h, w = x.shape
    chosen = torch.rand(b, generator=generator) < probability
    area = _uniform(0.02, 0.33, b, generator) * (h * w)
    aspect = _uniform(math.log(0.3), math.log(3.3), b, generator).exp()
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    rows = torch.arange(h)
    cols = torch.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None].to(x.device), 0.0)


class Mixer:
    """MixUp/CutMix (one chosen per batch when both are on) from torchvision.transforms.v2.

    torchvision draws from the global CPU RNG, so each call seeds a forked copy of it from our
    generator: batches stay reproducible from the generator alone and the global RNG is untouched.
    """

    def __init__(self, mixup: float, cutmix: float, num_classes: int):
        from torchvision.transforms import v2

        kinds = []
        if mixup:
            kinds.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
        if cutmix:
            kinds.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
        self.transform = kinds[0] if len(kinds) == 1 else v2.RandomChoice(kinds)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: CUDA's RNG is not ours to reseed
            return self.transform(x, y)


class DeviceLoader:
    """Moves a whole uint8 split to `device` once; yields normalized, augmented float32 batches.

    Yields (x float32 NCHW, y) with y int64 (B,), or soft float (B, num_classes) under mixup/cutmix.
    Every random draw comes from `generator` (a CPU generator; small per-batch parameter vectors are
    drawn on CPU then moved), so saving `generator.get_state()` is enough to resume exactly.
    """

    def __init__(
        self,
        images_uint8: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: list[float],
        std: list[float],
        device: torch.device | str = "cpu",
        augment: AugmentParams | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        num_classes: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4:
            raise ValueError(
                f"expected uint8 NCHW images, got {images_uint8.dtype} {tuple(images_uint8.shape)}"
            )
        self.device = torch.device(device)
        self.images = images_uint8.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.augment = augment or AugmentParams()
        self.shuffle = shuffle
        self.drop_last = drop_last
        # (rank, world): under DDP each rank takes every world-th image of the epoch's order. All ranks
        # draw the same order from equally seeded generators and get the same number of batches, as DDP
        # needs; a few images (n % world) sit out each epoch, a different few every time.
        self.rank, self.world = shard
        # Without a generator, follow the global seed (torch.manual_seed) but keep our own stream.
        self.generator = (
            generator if generator is not None else torch.Generator().manual_seed(torch.initial_seed())
        )
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.num_classes = num_classes
        mixing = self.augment.mixup or self.augment.cutmix
        self.mixer = Mixer(self.augment.mixup, self.augment.cutmix, num_classes) if mixing else None
        self._draws: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        self.drawn: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None] | None = None

    def __len__(self) -> int:
        n = len(self.labels) // self.world
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        if self.world > 1:
            order = order[: n - n % self.world][self.rank :: self.world]
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x, y = self.batch(self.images[index], self.labels[index])
            self.drawn = (index, *self._draws)  # which images, shifted and mirrored how: see drawn_views
            yield x, y

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images → augmented, normalized float32 batch (and soft labels under mixing)."""
        aug, g = self.augment, self.generator
        x = images.float().div_(255)
        pixels, flip = None, None
        if aug.geometric():
            x, pixels = affine(x, aug, g)
        if aug.hflip:
            x, flip = hflip(x, g)
        self._draws = (pixels, flip)
        x = (x - self.mean) / self.std
        if aug.erasing:
            x = erase(x, aug.erasing, g)
        if self.mixer is not None:
            return self.mixer(x, labels, g)
        return x, labels

    def view_count(self) -> int | None:
        """How many distinct versions of an image the augmentation draws from, when that is a finite set
        (whole-pixel crops and flips only: (2·crop_padding + 1)² shifts × 2 mirrorings); None when it
        draws from a continuum (rotation, translation, zoom, erasing, mixing)."""
        a = self.augment
        if a.warps() or a.erasing or a.mixup or a.cutmix:
            return None
        return (2 * a.crop_padding + 1) ** 2 * (2 if a.hflip else 1)

    def drawn_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The last batch's images and the number of each one's view, in [0, view_count()) as `render`
        numbers them: (shift row · side + shift column) · 2 + mirrored. Only asked for by a TeacherBank,
        so runs without one never compute it."""
        index, pixels, flip = self.drawn
        pad, side = self.augment.crop_padding, 2 * self.augment.crop_padding + 1
        if pixels is None:
            cell = torch.zeros(len(index), dtype=torch.int64)
        else:
            cell = (pixels[:, 1] + pad) * side + pixels[:, 0] + pad
        views = cell * 2 + flip.long() if flip is not None else cell
        return index, views.to(self.device)

    def render(self, images_uint8: torch.Tensor, view: int) -> torch.Tensor:
        """`images_uint8` as the augmentation draws them in view number `view`, normalized: the same
        operations as `batch`, with the shift and mirroring fixed instead of drawn."""
        a, pad = self.augment, self.augment.crop_padding
        cell, mirrored = divmod(view, 2) if a.hflip else (view, 0)
        dy, dx = divmod(cell, 2 * pad + 1)
        x = images_uint8.float().div_(255)
        if pad:
            x = crop(x, torch.tensor([dx - pad, dy - pad]).expand(len(x), 2), pad)
        if a.hflip:
            x = mirror(x, torch.full((len(x),), bool(mirrored)))
        return (x - self.mean) / self.std
