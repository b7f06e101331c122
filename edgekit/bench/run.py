"""`edgekit bench`: every bundle × variant × runtime measured for accuracy, agreement, size, speed, memory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from edgekit.bench import machine, report
from edgekit.bench.classes import per_class
from edgekit.bundle_meta import META_FILE, BundleMeta
from edgekit.errors import EdgekitError
from edgekit.runtimes import RUNTIMES, OrtSession, logits_over, runtime
from edgekit.timing import current_rss_mb, measure, peak_rss_mb, throughput

EVAL_CHUNK = 256  # images per call when computing accuracy (dynamic-batch models)
Z95 = 1.959963984540054  # the normal quantile for a two-sided 95% interval


@dataclass
class Bundle:
    path: Path
    meta: BundleMeta
    x: np.ndarray
    y: np.ndarray

    @property
    def name(self) -> str:
        return self.meta.name or self.path.name

    @property
    def fixed_batch(self) -> int | None:
        first = self.meta.input.shape[0]
        return first if isinstance(first, int) else None


def read_bundle(path: Path) -> Bundle:
    """A bundle's metadata and eval set, checked by `edgekit.bundle` (the one owner of the format)."""
    from edgekit import bundle

    meta, _ = bundle.read_bundle(path)
    x, y = bundle.load_eval(path)
    return Bundle(Path(path), meta, x, y)


def find_bundles(export_root: Path) -> list[Path]:
    """Every bundle folder directly inside `export_root` (hidden temporary folders excluded)."""
    if not export_root.is_dir():
        raise EdgekitError(f"{export_root}: no such folder; export a model first or name bundle folders")
    found = sorted(
        p for p in export_root.iterdir() if (p / META_FILE).is_file() and not p.name.startswith(".")
    )
    if not found:
        raise EdgekitError(f"{export_root}: no bundles in it (folders with {META_FILE}); run edgekit export")
    return found


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sane at 0% and 100% and for a few hundred images."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = correct / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))  # min/max: rounding at 0, 1


def bench(
    bundles: list[Path] | None,
    runtimes: list[str] | None,
    threads: int | None,
    batches: list[int],
    out_dir: Path,
    export_root: Path = Path("export"),
    console=None,
    min_window_s: float = 0.2,
    windows: int = 5,
) -> dict:
    """Measure each bundle × variant × runtime, plus the ORT per-call floor; write `out_dir/results.*`."""
    batches = _check_settings(batches, threads, min_window_s, windows)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise EdgekitError(f"{out_dir}: exists and is not a folder; choose another --out")
    chosen = _chosen_runtimes(runtimes)
    loaded = [read_bundle(p) for p in (bundles or find_bundles(Path(export_root)))]
    timing = {"min_window_s": min_window_s, "windows": windows, "warmup": "one window", "batches": batches}
    results: dict[str, Any] = {
        "format": "edgekit-bench/1",
        "command": machine.command_line(),
        "machine": {},  # filled in at the end, when it can name the torch a torch runtime loaded
        "rows": [],
        "floor": [],
        "skipped": [],
        "notes": [],
        "class_names": {b.name: b.meta.class_names for b in loaded},  # the order of each confusion matrix
    }
    say = console.print if console is not None else (lambda *a, **k: None)
    floors: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for bundle in loaded:
        for row, skipped in _measure_bundle(bundle, chosen, threads, batches, min_window_s, windows):
            if skipped:
                results["skipped"].append(skipped)
                continue
            results["rows"].append(row)
            what = f"{escape(bundle.name)} {row['variant']} {row['runtime']}"
            say(f"[dim]measured[/] {what}: {row['latency_ms']:.4g} ms")
        # The floor is timed again after each bundle of its input shape, so that one slow moment of a
        # shared machine does not make every ratio to it wrong (one run here: 7.1 µs, others 3.3-5.5).
        shape = tuple(bundle.meta.input.shape[1:])
        floors.setdefault(shape, []).append(_floor(shape, threads, batches, min_window_s, windows))
    results["floor"] = [_median_floor(measured) for measured in floors.values()]
    results["machine"] = machine.machine_info(timing, threads)
    for s in results["skipped"]:
        say(f"[yellow]skipped[/] {escape(s['bundle'])} {s['runtime']}: {escape(s['reason'])}")
    report.write(results, Path(out_dir), console)
    return results


def _chosen_runtimes(runtimes: list[str] | None) -> dict:
    """The runtimes asked for (all by default); unknown names fail here, before any work."""
    chosen = {name: runtime(name) for name in dict.fromkeys(runtimes or RUNTIMES.names())}
    for name, rt in chosen.items() if runtimes else ():  # named on purpose: a missing install is an error
        ok, reason = rt.available()
        if not ok and getattr(rt, "install", None):  # onnxruntime's GPU providers: what to install is known
            raise EdgekitError(f"--runtime {name}: {reason}")
    return chosen


def _measure_bundle(bundle, chosen: dict, threads, batches, min_window_s, windows):
    """(row, None) for each variant × runtime measured, (None, why) for each that could not be."""
    reference = _predict(OrtSession(_fp32(bundle), ["CPUExecutionProvider"], threads), bundle)
    for name, rt in chosen.items():
        ok, reason = rt.available(bundle)
        if not ok:
            yield None, {"bundle": bundle.name, "runtime": name, "reason": reason}
            continue
        for variant in bundle.meta.variants:
            if rt.variants is not None and variant not in rt.variants:
                continue
            try:
                yield (
                    _row(bundle, variant, name, rt, reference, threads, batches, min_window_s, windows),
                    None,
                )
            except EdgekitError as e:  # no provider, a variant the provider cannot load, a bad checkpoint
                yield None, {"bundle": bundle.name, "variant": variant, "runtime": name, "reason": str(e)}


def _check_settings(batches: list[int], threads: int | None, min_window_s: float, windows: int) -> list[int]:
    batches = sorted(dict.fromkeys(int(b) for b in (batches or [1])))
    if batches[0] < 1:
        raise EdgekitError(f"--batch: batch sizes must be ≥ 1, got {batches[0]}")
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads: must be ≥ 1 (or left out for the runtime's default), got {threads}")
    if min_window_s <= 0 or windows < 1:
        raise EdgekitError(f"timing: min_window_s ({min_window_s}) and windows ({windows}) must be positive")
    return batches


def _fp32(bundle: Bundle) -> Path:
    return bundle.path / bundle.meta.variants["fp32"].file


def _predict(session: Any, bundle: Bundle, rt: Any = None) -> np.ndarray:
    """Top-1 class for every eval image; a fixed-batch model gets exactly its batch (the tail padded)."""
    call = session.run if rt is None else (lambda x: rt.run(session, x))
    return logits_over(call, bundle.x, bundle.fixed_batch, EVAL_CHUNK).argmax(1)


def _images(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` eval images (repeated when the eval set is smaller)."""
    return np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))


def _timed(call, x: np.ndarray, batches: list[int], min_window_s: float, windows: int) -> dict[str, Any]:
    """Timing fields: latency at the smallest batch (1 unless told otherwise), throughput at the others."""
    timings = {b: measure(lambda b=b, xb=_images(x, b): call(xb), min_window_s, windows) for b in batches}
    first = timings[batches[0]]
    return {
        "latency_batch": batches[0],
        "latency_ms": first.ms,
        "p50_ms": first.p50_ms,
        "p90_ms": first.p90_ms,
        "p99_ms": first.p99_ms,
        "throughput": {str(b): throughput(t, b) for b, t in timings.items() if b != batches[0]},
        "timings": {str(b): t.as_dict() for b, t in timings.items()},
    }


def _row(bundle, variant, name, rt, reference, threads, batches, min_window_s, windows) -> dict[str, Any]:
    rss_before = current_rss_mb()
    session = rt.load(bundle, variant, threads)
    predicted = _predict(session, bundle, rt)
    correct, n = int((predicted == bundle.y).sum()), len(bundle.y)
    lo, hi = wilson(correct, n)
    usable = [bundle.fixed_batch] if bundle.fixed_batch else batches
    timed = _timed(lambda x: rt.run(session, x), bundle.x, usable, min_window_s, windows)
    rss_after = current_rss_mb()
    file = rt.file(bundle, variant)
    size = file.stat().st_size
    params = bundle.meta.params
    notes = [f"fixed batch {bundle.fixed_batch}: other batch sizes not run"] if usable != batches else []
    fp32_bytes = bundle.meta.variants["fp32"].bytes
    if variant != "fp32" and size > fp32_bytes:  # a "compressed" variant that is not smaller
        notes.append(f"{variant} file is larger than fp32 ({size:,} > {fp32_bytes:,} bytes)")
    classes = per_class(predicted, bundle.y, bundle.meta.class_names)
    return {
        "bundle": bundle.name,
        "variant": variant,
        "runtime": name,
        "device": getattr(session, "providers", [getattr(session, "device", "")])[0],
        "file": str(file),
        "bytes": size,
        "bytes_per_param": size / params if params else None,
        "params": params,
        "macs": bundle.meta.macs,
        "images": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": [lo, hi],
        "agreement": float((predicted == reference).mean()),
        **classes,
        "threads": threads if threads else "default",
        **timed,
        # RSS growth from before load() to after timing (this session, while alive; Linux /proc), and the
        # process-wide high-water mark so far: getrusage is monotonic and includes every earlier row.
        "mem_added_mb": None if rss_before is None or rss_after is None else rss_after - rss_before,
        "process_peak_rss_mb": peak_rss_mb(),
        "notes": notes,
    }


def identity_model(shape: tuple[int, ...]) -> bytes:
    """A one-node Identity graph with a dynamic batch axis: what onnxruntime costs per call, doing nothing."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *shape])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", *shape])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "floor", [x], [y])
    # IR 8 pinned (opset 17's own): the onnx package's newest IR can be ahead of the installed onnxruntime
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def _median_floor(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The floor measurement with the median latency, and every measurement's latency beside it."""
    ranked = sorted(measured, key=lambda f: f["latency_ms"])
    return {**ranked[(len(ranked) - 1) // 2], "measurements_ms": [f["latency_ms"] for f in measured]}


def _floor(shape, threads, batches, min_window_s, windows) -> dict[str, Any]:
    session = OrtSession(identity_model(shape), ["CPUExecutionProvider"], threads)
    x = np.zeros((1, *shape), np.float32)
    return {
        "bundle": "ort floor",
        "variant": "x".join(map(str, shape)),
        "runtime": "ort-cpu",
        "threads": threads if threads else "default",
        **_timed(session.run, x, batches, min_window_s, windows),
    }


__all__ = ["Bundle", "bench", "find_bundles", "identity_model", "read_bundle", "wilson"]
