"""`mobilenet_tiny`: MobileNetV2 inverted residual stages, a 1×1 conv, global average pool, Linear."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.contract import MODELS, Classifier
from edgekit.models.layers import (
    Knobs,
    chain,
    children,
    conv_bn_act,
    depthwise_bn_act,
    out_channels,
    scale,
)


class MobileNetParams(Knobs):
    # Depthwise is what MobileNet is, so `dwsep` is this family's default: the 3×3 of each block is
    # depthwise. `standard` makes it a full 3×3 conv (MobileNetV2 layout, ordinary convs). ReLU6 as in
    # the paper. Defaults: 101,107 params on digits (1×8×8, 10 classes).
    conv: Literal["standard", "dwsep"] = "dwsep"
    act: str = "relu6"
    # One entry per stage, in parallel lists (an int applies to every stage).
    channels: list[int] = Field(default_factory=lambda: [16, 24, 32, 64], min_length=1)
    expansion: int | list[int] = Field(default_factory=lambda: [1, 4, 4, 4])
    repeats: int | list[int] = Field(default_factory=lambda: [1, 2, 2, 2])
    strides: list[int] = Field(default_factory=lambda: [1, 1, 2, 2])
    stem_channels: int = Field(16, ge=1)
    last_channels: int = Field(320, ge=1)
    # Per-block widths after pruning, in block order; None: input × expansion. `mixed` (the 3×3 conv's
    # output) differs from `expanded` only when conv is standard, since a depthwise conv keeps its width.
    expanded: list[int] | None = None
    mixed: list[int] | None = None
    # Per block: whether it adds its input; None: when stride 1 and same width. Pruning can leave a
    # non-residual block with equal widths, and the rebuilt model must not gain a residual there.
    residual: list[bool] | None = None

    @model_validator(mode="after")
    def _lengths_match(self):
        for name in ("expansion", "repeats", "strides"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != len(self.channels):
                raise ValueError(f"{name} has {len(value)} entries, channels has {len(self.channels)}")
        total = sum(self.per_stage("repeats"))
        for name in ("expanded", "mixed", "residual"):
            value = getattr(self, name)
            if value is not None and len(value) != total:
                raise ValueError(f"{name} needs one width per block ({total}), got {len(value)}")
        return self

    def per_stage(self, name: str) -> list[int]:
        value = getattr(self, name)
        return value if isinstance(value, list) else [value] * len(self.channels)


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 (depthwise) → 1×1 linear project; residual when stride 1 and same width."""

    def __init__(self, cin: int, hidden: int, mixed: int, cout: int, stride: int, expand: bool, p, residual):
        super().__init__()
        possible = stride == 1 and cin == cout
        if residual and not possible:
            raise EdgekitError(
                f"model.residual: a block from {cin} to {cout} channels, stride {stride}, cannot add"
            )
        if not expand and hidden != cin:
            raise EdgekitError(f"model.expanded: an unexpanded block keeps its width {cin}, got {hidden}")
        # Expansion 1 has nothing to expand (MobileNetV2's first block).
        self.expand = conv_bn_act(cin, hidden, 1, 1, p) if expand else nn.Identity()
        self.mix = depthwise_bn_act(hidden, 3, stride, p, cout=mixed)
        self.project = conv_bn_act(mixed, cout, 1, 1, p, act_=False)
        self.residual = possible if residual is None else residual

    def forward(self, x):
        y = self.project(self.mix(self.expand(x)))
        return x + y if self.residual else y


class MobileNet(Classifier):
    def widths(self) -> dict:
        stages = children(self.features, "stage")
        blocks = [b for s in stages for b in children(s, "block")]
        return {
            "stem_channels": out_channels(self.features.stem),
            "channels": [out_channels(children(s, "block")[-1].project) for s in stages],
            "expanded": [b.mix.conv.in_channels for b in blocks],
            "mixed": [b.mix.conv.out_channels for b in blocks],
            "residual": [b.residual for b in blocks],
            "last_channels": out_channels(self.features.last),
            "width": 1.0,
        }


def _stages(p: MobileNetParams, cin: int) -> tuple[list[nn.Module], int]:
    expanded = iter(p.expanded) if p.expanded is not None else None
    mixed = iter(p.mixed) if p.mixed is not None else None
    residual = iter(p.residual) if p.residual is not None else None
    stages = []
    plan = zip(p.channels, p.per_stage("expansion"), p.per_stage("repeats"), p.strides, strict=True)
    for channels, t, repeats, stride in plan:
        cout, blocks = scale(channels, p), []
        for j in range(repeats):
            hidden = scale(next(expanded), p) if expanded is not None else cin * t
            mid = scale(next(mixed), p) if mixed is not None else hidden
            adds = next(residual) if residual is not None else None
            s = stride if j == 0 else 1
            blocks.append(InvertedResidual(cin, hidden, mid, cout, s, t != 1, p, adds))
            cin = cout
        stages.append(chain(blocks, p, prefix="block"))
    return stages, cin


@MODELS.register("mobilenet_tiny", MobileNetParams)
def mobilenet_tiny(p: MobileNetParams, in_channels: int, num_classes: int, image_size: int) -> MobileNet:
    stem = scale(p.stem_channels, p)
    stages, cin = _stages(p, stem)
    last = scale(p.last_channels, p)
    layers = OrderedDict(stem=conv_bn_act(in_channels, stem, 3, 1, p, stem=True))
    layers.update(chain(stages, p, prefix="stage").named_children())
    layers["last"] = conv_bn_act(cin, last, 1, 1, p)
    head = OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten())
    if p.dropout > 0:
        head["drop"] = nn.Dropout(p.dropout)
    head["fc"] = nn.Linear(last, num_classes)
    return MobileNet(nn.Sequential(layers), nn.Sequential(head))
