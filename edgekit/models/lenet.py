"""`lenet`: conv stages (conv → norm → act → 2×2 max-pool unless `downsample` skips it), flat or avg head."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
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


# Activations f that commute with a max-pool exactly, gradients included: f(max(a, b)) = max(f(a), f(b)),
# and wherever f makes two inputs equal (relu's zeros, relu6's sixes) its gradient is zero, so whichever
# of them the pool routes the gradient to gets nothing either way. Leaky ReLU, ELU and tanh are monotone
# too, but float rounding can tie distinct inputs where their gradient is not zero.
POOL_COMMUTES = {"relu", "relu6"}


class Stage(nn.Sequential):
    """conv → norm → act [→ 2×2 max-pool], the order the model is exported and printed in.

    With a pool and an activation in POOL_COMMUTES the forward pools first: the same outputs and the same
    gradients bit for bit (tests/test_models.py), with the activation on a quarter of the elements. On
    one CPU thread the 28×28 ladder's steps ran 1.0–1.2× as fast over two runs (`fashion/r2k` 1.19× and
    1.07×), the 8×8 models within noise (bench/pool_first.md). ONNX export keeps the canonical order, which
    onnxruntime fuses (Conv+Relu) and int8 calibrates on the activation's [0, max] range.
    """

    def __init__(self, block: nn.Sequential, pool: bool, act: str):
        super().__init__(OrderedDict(block.named_children()))
        if pool:
            # ceil_mode keeps a 1×1 map at 1×1, so 8×8 digits survive any number of stages (8→4→2→1→1).
            self.add_module("pool", nn.MaxPool2d(2, ceil_mode=True))
        self.pool_first = pool and act in POOL_COMMUTES

    def forward(self, x):
        if not self.pool_first or torch.onnx.is_in_onnx_export():
            return super().forward(x)
        return self.act(self.pool(self.norm(self.conv(x))))


def _stage(cin: int, cout: int, p: LeNetParams, stem: bool, pool: bool) -> Stage:
    return Stage(conv_bn_act(cin, cout, p.kernel_size, 1, p, stem=stem), pool, p.act)


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
