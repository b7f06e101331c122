"""`edgekit quantize`: a bundle's fp32 model.onnx → int8 (static, dynamic) or fp16 variants (onnxruntime)."""

from __future__ import annotations

import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, ValidationError

from edgekit.bundle import add_variant, load_eval, load_val, read_bundle
from edgekit.bundle_meta import Variant
from edgekit.errors import EdgekitError
from edgekit.quantize import int8
from edgekit.quantize.lean import make_lean
from edgekit.quantize.report import build_report, report_lines
from edgekit.registry import Registry
from edgekit.runs import atomic_write_bytes
from edgekit.runtimes import OrtSession, logits_over
from edgekit.timing import measure

KINDS = Registry("quantization")
# Operators only a quantized (or converted) model has: quantizing one again would compound the error.
QUANTIZED_OPS = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantizeMatMul", "QLinearAdd",
}  # fmt: skip
ROUND_S = 0.1  # seconds of calls per model in each timing round
LEAN_SAMPLE = 64  # eval images on which a lean pass must leave the outputs bit-identical


@dataclass
class Job:
    """One quantization of one bundle: its fp32 model, the val set every choice is scored on (`x`, `y`),
    the fp32 predictions on it, and a scratch folder. The test set (eval.npz) is not here: it is read
    once, after the choice, for the report."""

    bundle: Path
    source: Path  # the fp32 model file
    work: Path
    input: str
    fixed_batch: int | None
    x: np.ndarray
    y: np.ndarray
    reference: np.ndarray | None = None  # fp32 top-1 on val
    fp32_accuracy: float = 0.0
    fp32_ms: float | None = None

    def logits(self, model: Path | bytes, x: np.ndarray) -> np.ndarray:
        """onnxruntime CPU logits; a fixed-batch model gets exactly its batch (the tail padded)."""
        session = OrtSession(model, ["CPUExecutionProvider"], threads=1)
        return logits_over(session.run, x, self.fixed_batch)

    def predict(self, model: Path | bytes) -> np.ndarray:
        return self.logits(model, self.x).argmax(1)

    def latency(self, models: dict[str, Path | bytes], repeat: int) -> dict[str, float]:
        """ms per call at batch 1 (batch N for a fixed-batch model), 1 thread, the models interleaved round
        by round so that load from other processes falls on all of them alike; the median round counts."""
        x = np.resize(self.x[:1], (self.fixed_batch or 1, *self.x.shape[1:]))
        sessions = {name: OrtSession(m, ["CPUExecutionProvider"], threads=1) for name, m in models.items()}
        rounds = {name: [] for name in models}
        for _ in range(repeat):  # edgekit.timing.measure, bench's own clock: the speed-ups printed agree
            for name, s in sessions.items():
                rounds[name].append(measure(lambda s=s: s.run(x), ROUND_S, windows=1).ms)
        return {name: statistics.median(r) for name, r in rounds.items()}


def _int8(job: Job, params: int8.Int8Params, timing_repeat: int) -> tuple[onnx.ModelProto, dict[str, Any]]:
    best, candidates, quantizer = int8.choose(job, params, timing_repeat)
    depthwise = "per-channel" if params.per_channel else "per-channel (override under per-tensor)"
    weights = "per-channel" if params.per_channel else "per-tensor"
    calib = len(quantizer.calib)
    return onnx.load(str(best.file)), {
        "how": f"{best.format} QDQ, {weights} weights, {params.method} calibration on {calib} train images",
        "format": best.format,
        "target": params.target,
        "quant_format": "QDQ",
        "weights": weights,
        "depthwise": {"nodes": list(quantizer.depthwise), "weights": depthwise},
        "method": params.method,
        "calib_images": calib,
        "max_drop": params.max_drop,
        "excluded": best.excluded,
        "candidates": [c.summary() for c in candidates],
        "ms": best.ms,
    }


def _dynamic(job: Job, params: BaseModel, timing_repeat: int) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with int8.quiet():
        int8.pre_process(job.source, job.work / "pre.onnx")
        quantize_dynamic(
            str(job.work / "pre.onnx"), str(job.work / "dynamic.onnx"), weight_type=QuantType.QInt8
        )
    how = "int8 weights, activations quantized with ranges computed at each call"
    return onnx.load(str(job.work / "dynamic.onnx")), {"method": "dynamic", "how": how}


def _fp16(job: Job, params: BaseModel, timing_repeat: int) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings(), int8.quiet():
        warnings.simplefilter("ignore")  # it warns about values clamped to the fp16 range; accuracy shows it
        # keep_io_types: float32 input and logits, as edgekit.json's input spec says, for every variant
        model = convert_float_to_float16(onnx.load(str(job.source)), keep_io_types=True)
    return model, {"keep_io_types": True, "how": "fp16 weights, float32 input and output"}


VARIANTS: dict[str, tuple[str, str]] = {}  # kind → (variant name, dtype); its file: model.<name>.onnx


def register_kind(kind: str, variant: str, dtype: str, fn, params: type[BaseModel] | None = None) -> None:
    """Adding a quantization kind is this one call: `edgekit quantize BUNDLE --kind NAME` then runs it."""
    KINDS.register(kind, *([params] if params else []))(fn)
    VARIANTS[kind] = (variant, dtype)


register_kind("int8", "int8", "int8", _int8, int8.Int8Params)
register_kind("dynamic", "int8-dynamic", "int8", _dynamic)
register_kind("fp16", "fp16", "float16", _fp16)


def quantize_bundle(
    path: Path,
    kind: str = "int8",
    force: bool = False,
    console=None,
    timing_repeat: int = 5,
    **options: Any,
) -> dict[str, Any]:
    """Add the `kind` variant (int8, dynamic, fp16) of the bundle's fp32 model to the bundle.

    `options` are the kind's own (int8: calib, method, max_drop, format, per_channel). Returns the report
    that is also printed: accuracy before/after on eval.npz, top-1 agreement with fp32, size, speed.
    """
    entry = KINDS.get(kind, "quantize")
    params = _params(entry, options)
    meta, paths = read_bundle(path)
    name, file, dtype = _variant(kind, params)
    out = Path(path) / file
    if (out.exists() or name in meta.variants) and not force:
        raise EdgekitError(f"{out}: already exists; pass --force to replace it")
    check_float(paths.model)
    x, y = load_val(path)
    fixed = meta.input.shape[0] if isinstance(meta.input.shape[0], int) else None
    with tempfile.TemporaryDirectory(prefix="edgekit-quantize-") as work:
        job = Job(Path(path), paths.model, Path(work), meta.input.name, fixed, x, y)
        job.reference = job.predict(paths.model)
        job.fp32_accuracy = float((job.reference == y).mean())
        model, details = entry.fn(job, params, timing_repeat)
        sample = np.resize(x, (fixed, *x.shape[1:])) if fixed else x[:LEAN_SAMPLE]  # the batch it takes
        model, lean = make_lean(model, sample, Path(work))
        data = model.SerializeToString()
        details["val"] = {
            "accuracy": float((job.predict(data) == y).mean()),
            "fp32_accuracy": job.fp32_accuracy,
        }
        if details.get("ms") is None:  # int8 timed its candidates already
            times = job.latency({"fp32": paths.model, name: data}, timing_repeat)
            job.fp32_ms, details["ms"] = times["fp32"], times[name]
        test = _on_test(job, path, data)  # the test split, read once, after every choice is made
    report = build_report(job, meta, name, file, data, test, details, lean)
    _write(Path(path), name, Variant(file=file, bytes=len(data), dtype=dtype, source="fp32"), data, report)
    for line in report_lines(report) if console is not None else []:
        console.print(line, highlight=False)
    return report


def _write(bundle: Path, name: str, variant: Variant, data: bytes, report: dict[str, Any]) -> None:
    """The model file (atomically), then its entry in edgekit.json with how it was made and measured."""
    out = bundle / variant.file
    atomic_write_bytes(out, lambda f: f.write(data))
    out.chmod(0o644)  # like the rest of the bundle (the temporary file was owner-only)
    measured = {k: report[k] for k in ("accuracy", "agreement", "drop", "speed", "bytes_per_param", "lean")}
    how = {
        k: v for k, v in report["details"].items() if k not in ("ms", "candidates", "how")
    }  # host-specific
    add_variant(bundle, name, Variant(**variant.model_dump(exclude=set(measured)), **measured, **how))


def variant_of(kind: str, options: dict[str, Any]) -> str:
    """The variant `kind` writes with these options (int8 with target trt: int8-trt)."""
    return _variant(kind, _params(KINDS.get(kind, "quantize"), options))[0]


def _variant(kind: str, params: BaseModel) -> tuple[str, str, str]:
    name, dtype = VARIANTS[kind]
    name = getattr(params, "variant", name)  # a kind's params may choose it (`Int8Params.variant`)
    return name, f"model.{name}.onnx", dtype


def _params(entry, options: dict[str, Any]) -> BaseModel:
    """The kind's params from the options given; an option another kind owns is named in the error."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return entry.params.model_validate(given)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            flag = "--" + str(err["loc"][0]).replace("_", "-")
            if err["type"] == "extra_forbidden":
                lines.append(f"{flag}: not an option of --{entry.name} (only --int8 takes it)")
            elif err["type"] == "value_error":
                lines.append(f"{flag}: {err['ctx']['error']}")
            else:
                lines.append(f"{flag} {err.get('input')!r}: {err['msg']}")
        raise EdgekitError("\n".join(lines)) from None


def check_float(model_file: Path) -> None:
    """Refuse a model that is already quantized or converted: quantize starts from fp32."""
    model = onnx.load(str(model_file), load_external_data=False)
    found = sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)
    half = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    if found or half:
        what = f"{', '.join(found)} nodes" if found else "float16 weights"
        raise EdgekitError(
            f"{model_file}: already quantized ({what}); quantize starts from an fp32 model.onnx"
        )


def _on_test(job: Job, bundle: Path, data: bytes) -> dict[str, Any]:
    """Test-split figures of the variant and of fp32: accuracy and top-1 agreement, for the report only."""
    x, y = load_eval(bundle)
    fp32, variant = job.logits(job.source, x).argmax(1), job.logits(data, x).argmax(1)
    return {
        "accuracy": float((variant == y).mean()),
        "fp32_accuracy": float((fp32 == y).mean()),
        "agreement": float((variant == fp32).mean()),
        "images": len(y),
    }
