"""Timing one call robustly: warm-up, fixed-duration windows, the median window, per-call percentiles."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

try:
    import resource  # POSIX only
except ImportError:  # pragma: no cover - Windows
    resource = None


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call. `ms` is the median over windows of each window's mean per-call time: a
    burst of noise (another process, a frequency change) spoils one window, not the figure. p50/p90/p99
    are over every individual call in all windows, so the tail is visible too."""

    ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    calls: int
    windows: int
    window_ms: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], min_window_s: float = 0.2, windows: int = 5) -> Timing:
    """Warm up for one window, then time `windows` windows, each repeating `fn` for ≥ `min_window_s`."""
    if windows < 1 or min_window_s <= 0:
        raise ValueError(f"windows={windows}, min_window_s={min_window_s}: both must be positive")
    _window(fn, min_window_s)  # warm-up: first-call allocations, caches, thread-pool start, CPU clocks
    calls: list[np.ndarray] = []
    per_window = []
    for _ in range(windows):
        durations = _window(fn, min_window_s)
        calls.append(durations)
        per_window.append(float(durations.mean()))
    every = np.concatenate(calls) * 1e3
    p50, p90, p99 = np.percentile(every, [50, 90, 99])
    return Timing(
        ms=float(np.median(per_window)) * 1e3,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        calls=len(every),
        windows=windows,
        window_ms=[w * 1e3 for w in per_window],
    )


def _window(fn: Callable[[], object], min_window_s: float) -> np.ndarray:
    """Seconds taken by each call of `fn`, repeated until `min_window_s` have passed (at least one call).

    One perf_counter read per call: each call's end is the next call's start, so nothing between calls
    goes unmeasured and the window's mean equals its elapsed time over its calls.
    """
    stamps = [time.perf_counter()]
    end = stamps[0] + min_window_s
    while stamps[-1] < end:
        fn()
        stamps.append(time.perf_counter())
    return np.diff(np.asarray(stamps))


def throughput(timing: Timing, batch: int) -> float:
    """Images per second at this batch size, from the median window."""
    return batch / (timing.ms / 1e3)


def current_rss_mb() -> float | None:
    """Resident memory of this process now (Linux /proc; None where it cannot be read)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    if resource is None:
        return None
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float | None:
    """This process's high-water resident memory so far: monotonic, it includes every earlier row."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
