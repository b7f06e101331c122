"""`lenet`: conv stages (conv → norm → act → 2×2 max-pool unless `downsample` skips it), flat or avg head."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
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
    # Which stages end in the 2×2 max-pool; None: every one. A stage that keeps the resolution costs
    # MACs, not parameters: on 8×8 digits pooling every stage leaves 1×1 maps after three.
    downsample: list[bool] | None = None

    @model_validator(mode="after")
    def _one_flag_per_stage(self) -> LeNetParams:
        if self.downsample is not None and len(self.downsample) != len(self.channels):
            raise ValueError(
                f"downsample has {len(self.downsample)} flags for {len(self.channels)} channels; "
                "expected one per stage"
            )
        return self


class LeNet(Classifier):
    def widths(self) -> dict:
        return {
            "channels": [out_channels(s) for s in children(self.features, "stage")],
            "hidden": [m.out_features for m in children(self.head, "hidden")],
            "width": 1.0,
        }


def _stage(cin: int, cout: int, p: LeNetParams, stem: bool, pool: bool) -> nn.Sequential:
    block = conv_bn_act(cin, cout, p.kernel_size, 1, p, stem=stem)
    if pool:
        # ceil_mode keeps a 1×1 map at 1×1, so 8×8 digits survive any number of stages (8→4→2→1→1).
        block.add_module("pool", nn.MaxPool2d(2, ceil_mode=True))
    return block


@MODELS.register("lenet", LeNetParams)
def lenet(p: LeNetParams, in_channels: int, num_classes: int, image_size: int) -> LeNet:
    widths = [scale(c, p) for c in p.channels]
    pools = p.downsample or [True] * len(widths)
    pairs = enumerate(zip([in_channels, *widths], widths, pools, strict=False))
    stages = [_stage(cin, cout, p, stem=i == 0, pool=pool) for i, (cin, cout, pool) in pairs]
    features = chain(stages, p, prefix="stage")
    shape = out_shape(features, in_channels, image_size)
    # Average pooling makes the head independent of image size; flatten keeps the spatial layout.
    in_features = {"flatten": shape.numel(), "avg": shape[0]}[p.pool]
    return LeNet(features, mlp(in_features, p.hidden, num_classes, p, pool=p.pool == "avg"))
