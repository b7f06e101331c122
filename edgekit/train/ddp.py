"""Multi-process training under `torchrun … -m edgekit train`: the process group, rank 0's duties, reductions.

torchrun describes the job in environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
Every rank holds the whole (small) dataset on its device and trains on its shard of each epoch; DDP
averages gradients, so all ranks keep identical weights. Their BatchNorm statistics are their own (unless
`train.sync_bn`), so their val figures may differ: every decision taken from them is rank 0's, broadcast
(`from_main`). Only rank 0 writes.
"""

from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from edgekit.errors import EdgekitError


def launched() -> bool:
    """Started by torchrun (which sets WORLD_SIZE), even with one process: `--nproc_per_node 1` is a DDP
    run of one, the smallest run that exercises the process group (NCCL on a one-GPU machine)."""
    return "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def setup(device_name: str) -> torch.device | None:
    """Join torchrun's process group; this rank's device, or None when not launched by torchrun."""
    if not launched():
        return None
    cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if not cuda:
        return torch.device("cpu")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def teardown(state=None) -> None:
    """Leave the process group. The DDP wrapper in `state.net` goes first, while the interpreter is whole:
    its reducer holds gloo work objects whose destruction during interpreter shutdown aborted a rank now
    and then ("terminate called without an active exception", torch 2.14, CPU; torch PR #179291)."""
    if state is not None:
        state.net = None
        gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module | None:
    """The DDP wrapper the training forward must run through (None when not distributed)."""
    if not dist.is_initialized():
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`train.sync_bn`: BatchNorm → SyncBatchNorm, so that every rank normalizes with the statistics of the
    global batch (and all ranks keep the same running statistics); nothing to do without a process group."""
    if not dist.is_initialized():
        return model
    if device.type != "cuda":  # torch's SyncBatchNorm raises on CPU tensors at the first training step
        raise EdgekitError(
            f"train.sync_bn = true: SyncBatchNorm runs on CUDA devices only, this run is on {device.type}; "
            "set train.sync_bn=false"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


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
