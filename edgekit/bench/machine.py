"""What bench figures depend on: the command, the CPU, the GPUs, runtime versions and timing settings."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any


def command_line() -> str:
    """The command that produced these results, as a user would type it."""
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0])
    if first.name == "edgekit" or (first.name == "__main__.py" and first.parent.name == "edgekit"):
        argv[0] = "edgekit"
    return shlex.join(argv)


def cpu_model() -> str:
    """The CPU every figure must name (machines differ by 2× and more)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


GPU_FIELDS = ("name", "memory.total", "driver_version", "compute_cap")


def _gpus() -> list[dict[str, str]]:
    """Each NVIDIA GPU as nvidia-smi reports it (name, memory, driver, compute capability); [] without."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [
        dict(zip(GPU_FIELDS, (v.strip() for v in line.split(",")), strict=False))
        for line in lines.splitlines()
    ]


def machine_info(timing: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, runtime versions and providers, timing settings."""
    import numpy
    import onnxruntime

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch = sys.modules.get("torch")  # reported when a torch runtime loaded it; never imported for this
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
        "torch": getattr(torch, "__version__", None),
        "gpus": _gpus(),
        "threads": threads if threads else "default (onnxruntime: one per physical core; torch: its own)",
        "timing": timing,
    }
