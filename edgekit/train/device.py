"""Which device a run trains on (this rank's under torchrun), its autocast precision and memory layout."""

from __future__ import annotations

import torch

from edgekit.errors import EdgekitError
from edgekit.train import ddp


def pick_device(name: str) -> torch.device:
    distributed = ddp.setup(name)  # under torchrun: this rank's device
    if distributed is not None:
        return distributed
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EdgekitError(f"train.device = '{name}': CUDA is not available here; use auto or cpu")
    return torch.device(name)


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """bf16 on GPUs that have it in hardware (compute capability 8.0, Ampere, and later), else fp16 with a
    GradScaler; None on CPU. Not `torch.cuda.is_bf16_supported()`: it is true on older cards through slow
    emulation, which left the fp16 branch unreachable."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


def layout(channels_last: bool) -> torch.memory_format:
    """The memory format for a model (and its teacher) that `train.channels_last` asks for, on any device."""
    return torch.channels_last if channels_last else torch.preserve_format
