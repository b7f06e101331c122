"""`lenet`: conv stages (conv → norm → act → 2×2 max-pool) and a flatten or average-pool MLP head."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from edgekit.models.contract import MODELS, Classifier
from edgekit.models.layers import Knobs, chain, children, conv_bn_act, mlp, out_channels, out_shape, scale


class LeNetParams(Knobs):
    # Defaults: 19,258 params on digits (1×8×8, 10 classes); conv=dwsep with the same channels: 3,187,
    # and 3,306 with stem_conv=standard (lenet_small_dw).
    channels: list[int] = Field(default_factory=lambda: [16, 32, 48], min_length=1)
    kernel_size: int = Field(3, ge=1)
    hidden: list[int] = Field(default_factory=list)
    pool: Literal["flatten", "avg"] = "flatten"


class LeNet(Classifier):
    def widths(self) -> dict:
        return {
            "channels": [out_channels(s) for s in children(self.features, "stage")],
            "hidden": [m.out_features for m in children(self.head, "hidden")],
            "width": 1.0,
        }


def _stage(cin: int, cout: int, p: LeNetParams, stem: bool) -> nn.Sequential:
    block = conv_bn_act(cin, cout, p.kernel_size, 1, p, stem=stem)
    # ceil_mode keeps a 1×1 map at 1×1, so 8×8 digits survive any number of stages (8→4→2→1→1).
    block.add_module("pool", nn.MaxPool2d(2, ceil_mode=True))
    return block


@MODELS.register("lenet", LeNetParams)
def lenet(p: LeNetParams, in_channels: int, num_classes: int, image_size: int) -> LeNet:
    widths = [scale(c, p) for c in p.channels]
    pairs = enumerate(zip([in_channels, *widths], widths, strict=False))
    stages = [_stage(cin, cout, p, stem=i == 0) for i, (cin, cout) in pairs]
    features = chain(stages, p, prefix="stage")
    shape = out_shape(features, in_channels, image_size)
    # Average pooling makes the head independent of image size; flatten keeps the spatial layout.
    in_features = {"flatten": shape.numel(), "avg": shape[0]}[p.pool]
    return LeNet(features, mlp(in_features, p.hidden, num_classes, p, pool=p.pool == "avg"))
