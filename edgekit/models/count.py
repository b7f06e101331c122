"""Model size: trainable parameters and multiply-accumulates (MACs) measured by torch's flop counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple) -> int:
    """MACs of one forward pass on `input_shape` ((C, H, W) means batch 1), counted by FlopCounterMode.

    Counts the matmuls and convolutions (FLOPs // 2); norms, activations and pooling are not MACs.
    """
    shape = tuple(input_shape)
    shape = (1, *shape) if len(shape) == 3 else shape
    first = next(model.parameters(), None)
    x = torch.zeros(shape, device=first.device if first is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
