"""Multi-process training under `torchrun … -m edgekit train`: the process group, rank 0's duties, reductions.

torchrun describes the job in environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
Every rank holds the whole (small) dataset on its device and trains on its shard of each epoch; DDP
averages gradients, so all ranks keep identical weights and evaluate identically. Only rank 0 writes.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device_name: str) -> torch.device | None:
    """Join torchrun's process group; this rank's device, or None when not launched by torchrun."""
    if world_size() == 1:
        return None
    cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if not cuda:
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module | None:
    """The DDP wrapper the training forward must run through (None when not distributed)."""
    if not dist.is_initialized():
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def total(value: torch.Tensor) -> torch.Tensor:
    """Sum of `value` over all ranks (itself when not distributed)."""
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (e.g. the run folder rank 0 created)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
