"""How channels are ranked for pruning (`IMPORTANCES`: l1, l2, taylor, bn-scale) and torch-pruning fixes."""

from __future__ import annotations

import math

import torch_pruning as tp
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.registry import Registry

IMPORTANCES = Registry("importance")


@IMPORTANCES.register("l1")
def _l1(model: nn.Module) -> tp.importance.Importance:
    return tp.importance.GroupMagnitudeImportance(p=1)


@IMPORTANCES.register("l2")
def _l2(model: nn.Module) -> tp.importance.Importance:
    return tp.importance.GroupMagnitudeImportance(p=2)


@IMPORTANCES.register("taylor")
def _taylor(model: nn.Module) -> tp.importance.Importance:
    return tp.importance.GroupTaylorImportance()


@IMPORTANCES.register("bn-scale")
def _bn_scale(model: nn.Module) -> tp.importance.Importance:
    # Network slimming ranks channels by their BatchNorm scale: without BatchNorm nothing would be ranked.
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise EdgekitError(
            "--importance bn-scale: the model has no BatchNorm layers (model.norm is not 'batch'); "
            f"use one of {', '.join(n for n in IMPORTANCES.names() if n != 'bn-scale')}"
        )
    return tp.importance.BNScaleImportance()


class GroupNormPruner(tp.pruner.function.GroupNormPruner):
    """GroupNorm channels pruned one by one, with a group count that still divides them.

    torch-pruning's own removes the same channels from every group, so with one channel per group
    (`instance`, or `group` on ≤ 8 channels) none could go. `rebuild` then sets the recipe's group count.
    """

    def prune_out_channels(self, layer: nn.GroupNorm, idxs: list) -> nn.Module:
        instance = layer.num_groups == layer.num_channels
        groups = math.gcd(layer.num_channels - len(idxs), layer.num_groups)
        layer = super().prune_out_channels(layer, idxs)
        layer.num_groups = layer.num_channels if instance else groups
        return layer

    prune_in_channels = prune_out_channels

    def get_in_channel_groups(self, layer: nn.GroupNorm) -> int:
        return 1

    get_out_channel_groups = get_in_channel_groups
