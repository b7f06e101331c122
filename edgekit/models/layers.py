"""The knobs every architecture shares (conv kind, norm, activation, dropout, width) and their factories."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from edgekit.errors import EdgekitError

# Tables by name, so a recipe's string picks a module and adding one is one line (no if-chains).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hardswish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
}

# GroupNorm with up to 8 groups: gcd keeps the count a divisor of any width, including the odd widths
# that pruning leaves behind. `instance` is GroupNorm(c, c) (one group per channel), which exports to
# ONNX as plainly as the others.
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "group": lambda c: nn.GroupNorm(math.gcd(c, 8), c),
    "layer": lambda c: nn.GroupNorm(1, c),
    "instance": lambda c: nn.GroupNorm(c, c),
    "none": lambda c: nn.Identity(),
}


def _standard(cin: int, cout: int, k: int, stride: int, bias: bool) -> nn.Module:
    return nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=bias)


def _dwsep(cin: int, cout: int, k: int, stride: int, bias: bool) -> nn.Module:
    # A 1×1 conv has nothing to separate; only k×k convs (k > 1) become depthwise + pointwise.
    if k == 1:
        return _standard(cin, cout, 1, stride, bias)
    return nn.Sequential(
        OrderedDict(
            dw=nn.Conv2d(cin, cin, k, stride, padding=k // 2, groups=cin, bias=False),
            pw=nn.Conv2d(cin, cout, 1, bias=bias),
        )
    )


CONVS: dict[str, Callable[[int, int, int, int, bool], nn.Module]] = {"standard": _standard, "dwsep": _dwsep}


class Knobs(BaseModel):
    """Options every architecture has; a family's params class subclasses this and adds its own."""

    model_config = ConfigDict(extra="forbid")

    conv: Literal["standard", "dwsep"] = "standard"
    # The conv that reads the image; None: `conv`'s kind. On a one-channel image a depthwise-separable
    # conv is rank 1 (each output channel a scaled copy of one filtered image): lenet_small_dw trained to
    # 91.7% test accuracy so and 97.4% with a standard stem (2 seeds each), for 119 more parameters.
    stem_conv: Literal["standard", "dwsep"] | None = None
    norm: Literal["batch", "group", "layer", "instance", "none"] = "batch"
    act: str = "relu"
    dropout: float = Field(0.0, ge=0, lt=1)
    dropout2d: float = Field(0.0, ge=0, lt=1)
    width: float = Field(1.0, gt=0)

    @field_validator("act")
    @classmethod
    def _known_act(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{value}'; allowed: {', '.join(sorted(ACTIVATIONS))}")
        return value


def scale(channels: int, knobs: Knobs) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, round(channels * knobs.width))


def act(knobs: Knobs) -> nn.Module:
    return ACTIVATIONS[knobs.act]()


def norm(channels: int, knobs: Knobs) -> nn.Module:
    return NORMS[knobs.norm](channels)


def conv(
    cin: int, cout: int, k: int, stride: int, knobs: Knobs, bias: bool = False, stem: bool = False
) -> nn.Module:
    """A k×k conv of the recipe's kind (a bare conv, no norm); `stem`: the conv that reads the image."""
    kind = knobs.stem_conv if stem and knobs.stem_conv else knobs.conv
    return CONVS[kind](cin, cout, k, stride, bias)


def conv_bn_act(
    cin: int, cout: int, k: int, stride: int, knobs: Knobs, act_: bool = True, stem: bool = False
) -> nn.Sequential:
    """conv → norm → activation; the conv has a bias only when there is no norm to absorb it."""
    layers = OrderedDict(
        conv=conv(cin, cout, k, stride, knobs, bias=knobs.norm == "none", stem=stem),
        norm=norm(cout, knobs),
    )
    if act_:
        layers["act"] = act(knobs)
    return nn.Sequential(layers)


def depthwise_bn_act(
    channels: int, k: int, stride: int, knobs: Knobs, cout: int | None = None
) -> nn.Sequential:
    """The spatial conv of an inverted residual: depthwise for `dwsep`, a full k×k conv for `standard`.

    `cout` differs from `channels` only for a standard conv whose output was pruned separately.
    """
    cout = channels if cout is None else cout
    groups = {"dwsep": channels, "standard": 1}[knobs.conv]
    if groups > 1 and cout != channels:
        raise EdgekitError(f"model.mixed: a depthwise conv keeps its width: {channels} in, {cout} out")
    layers = OrderedDict(
        conv=nn.Conv2d(channels, cout, k, stride, padding=k // 2, groups=groups, bias=knobs.norm == "none"),
        norm=norm(cout, knobs),
        act=act(knobs),
    )
    return nn.Sequential(layers)


def chain(blocks: Iterable[nn.Module], knobs: Knobs, prefix: str = "block") -> nn.Sequential:
    """Blocks named `<prefix>0, <prefix>1, …` with Dropout2d between them when `dropout2d` is set.

    Named children keep state_dict keys the same whether or not dropout is on.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, block in enumerate(blocks):
        if i and knobs.dropout2d > 0:
            layers[f"drop{i}"] = nn.Dropout2d(knobs.dropout2d)
        layers[f"{prefix}{i}"] = block
    return nn.Sequential(layers)


def mlp(
    in_features: int, hidden: list[int], num_classes: int, knobs: Knobs, pool: bool = False
) -> nn.Sequential:
    """[Global avg pool →] Flatten → (Linear → act → dropout)* → Linear, the last one named `fc`."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if pool:
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    for i, units in enumerate(hidden):
        layers[f"hidden{i}"] = nn.Linear(in_features, units)
        layers[f"act{i}"] = act(knobs)
        if knobs.dropout > 0:
            layers[f"drop{i}"] = nn.Dropout(knobs.dropout)
        in_features = units
    layers["fc"] = nn.Linear(in_features, num_classes)
    return nn.Sequential(layers)


def out_shape(module: nn.Module, in_channels: int, image_size: int) -> torch.Size:
    """The output shape of `module` for one image, found by running it (eval mode, no grad).

    Running it is exact for any stride/padding/pooling mix, where arithmetic would duplicate the layers.
    """
    was_training = module.training
    module.eval()
    with torch.no_grad():
        shape = module(torch.zeros(1, in_channels, image_size, image_size)).shape[1:]
    module.train(was_training)
    return shape


def children(module: nn.Module, prefix: str) -> list[nn.Module]:
    """The children named `<prefix>0, <prefix>1, …` (skipping the dropout between them)."""
    return [m for name, m in module.named_children() if name.startswith(prefix)]


def out_channels(module: nn.Module) -> int:
    """The output channels of the last conv inside `module` (what pruning left there)."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels
