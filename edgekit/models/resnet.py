"""`resnet_small`: a stem, stages of basic residual blocks, and a head on the flattened feature map."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.models.contract import MODELS, Classifier
from edgekit.models.layers import (
    Knobs,
    act,
    chain,
    children,
    conv_bn_act,
    mlp,
    norm,
    out_channels,
    out_shape,
    scale,
)


class ResNetParams(Knobs):
    # Defaults: one stage at full resolution, so the flatten → Linear head is about half of the
    # parameters (on digits); `head: bottleneck` then shows what cutting channels before flatten saves.
    channels: list[int] = Field(default_factory=lambda: [48], min_length=1)
    blocks: int | list[int] = Field(1)
    stem_channels: int = Field(16, ge=1)
    head: Literal["linear", "mlp", "bottleneck"] = "linear"
    bottleneck_channels: int = Field(4, ge=1)
    hidden: int = Field(64, ge=1)
    # Width between the two convs of each block, in block order; None: the stage's channels. Pruning
    # narrows these independently of the stage outputs (which the residual adds tie together).
    mid: list[int] | None = None
    # Per block: whether the shortcut is a 1×1 conv projection; None: when the stride or width changes.
    # Pruning can leave a projected block with equal widths, and the rebuilt model must keep its conv.
    projection: list[bool] | None = None

    @model_validator(mode="after")
    def _lengths_match(self):
        if isinstance(self.blocks, list) and len(self.blocks) != len(self.channels):
            raise ValueError(f"blocks has {len(self.blocks)} entries, channels has {len(self.channels)}")
        if self.mid is not None and len(self.mid) != sum(self.per_stage()):
            raise ValueError(f"mid needs one width per block ({sum(self.per_stage())}), got {len(self.mid)}")
        if self.projection is not None and len(self.projection) != sum(self.per_stage()):
            total = sum(self.per_stage())
            raise ValueError(f"projection needs one flag per block ({total}), got {len(self.projection)}")
        return self

    def per_stage(self) -> list[int]:
        blocks = self.blocks
        return blocks if isinstance(blocks, list) else [blocks] * len(self.channels)


class BasicBlock(nn.Module):
    """Two 3×3 convs plus a shortcut (1×1 conv projection when the shape changes), then act."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, p: ResNetParams, project: bool | None):
        super().__init__()
        self.conv1 = conv_bn_act(cin, mid, 3, stride, p)
        self.conv2 = conv_bn_act(mid, cout, 3, 1, p, act_=False)
        self.shortcut = nn.Identity()
        needed = stride != 1 or cin != cout
        if project is False and needed:
            raise EdgekitError(
                f"model.projection: a block from {cin} to {cout} channels, stride {stride}, needs one"
            )
        if needed or project:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(cin, cout, 1, stride, bias=p.norm == "none"), norm=norm(cout, p))
            )
        self.act = act(p)

    def forward(self, x):
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(Classifier):
    def widths(self) -> dict:
        stages = children(self.features, "stage")
        blocks = [b for s in stages for b in children(s, "block")]
        head = self.head
        found = {
            "stem_channels": out_channels(self.features.stem),
            "channels": [out_channels(children(s, "block")[-1].conv2) for s in stages],
            "mid": [out_channels(b.conv1) for b in blocks],
            "projection": [not isinstance(b.shortcut, nn.Identity) for b in blocks],
            "width": 1.0,
        }
        if hasattr(head, "reduce"):
            found["bottleneck_channels"] = out_channels(head.reduce)
        hidden = children(head, "hidden")
        if hidden:
            found["hidden"] = hidden[0].out_features
        return found


def _linear(p: ResNetParams, shape, num_classes: int) -> nn.Module:
    return mlp(shape.numel(), [], num_classes, p)


def _mlp(p: ResNetParams, shape, num_classes: int) -> nn.Module:
    return mlp(shape.numel(), [p.hidden], num_classes, p)


def _bottleneck(p: ResNetParams, shape, num_classes: int) -> nn.Module:
    # A 1×1 conv cuts channels before flatten, so the Linear shrinks by channels / bottleneck_channels.
    reduce = conv_bn_act(shape[0], scale(p.bottleneck_channels, p), 1, 1, p)
    fc = mlp(scale(p.bottleneck_channels, p) * shape[1:].numel(), [], num_classes, p)
    return nn.Sequential(OrderedDict(reduce=reduce, **dict(fc.named_children())))


HEADS: dict[str, Callable[[ResNetParams, object, int], nn.Module]] = {
    "linear": _linear,
    "mlp": _mlp,
    "bottleneck": _bottleneck,
}


@MODELS.register("resnet_small", ResNetParams)
def resnet_small(p: ResNetParams, in_channels: int, num_classes: int, image_size: int) -> ResNet:
    stem = scale(p.stem_channels, p)
    mids = iter(p.mid) if p.mid is not None else None
    projections = iter(p.projection) if p.projection is not None else None
    stages, cin = [], stem
    for i, (channels, count) in enumerate(zip(p.channels, p.per_stage(), strict=True)):
        cout = scale(channels, p)
        blocks = []
        for j in range(count):
            mid = scale(next(mids), p) if mids is not None else cout
            project = next(projections) if projections is not None else None
            blocks.append(BasicBlock(cin, mid, cout, 2 if i and not j else 1, p, project))
            cin = cout
        stages.append(chain(blocks, p, prefix="block"))
    layers = OrderedDict(stem=conv_bn_act(in_channels, stem, 3, 1, p, stem=True))
    layers.update(chain(stages, p, prefix="stage").named_children())
    features = nn.Sequential(layers)
    # No global pooling: the head sees the whole map, which is what makes its size worth studying.
    head = HEADS[p.head](p, out_shape(features, in_channels, image_size), num_classes)
    return ResNet(features, head)
