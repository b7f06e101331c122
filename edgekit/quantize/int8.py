"""Static int8 quantization with onnxruntime: calibration, candidate formats, the --max-drop fallback.

The bundle's fp32 model goes through onnxruntime's pre-processing (`quant_pre_process`), is calibrated once
on the bundle's training images (the ranges are cached and reused), then quantized to QDQ in each candidate
format. A candidate whose accuracy drop on eval.npz exceeds the limit keeps its most sensitive nodes in fp32,
one at a time, until it fits. The fastest candidate that fits, timed here side by side with fp32, is kept.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edgekit.bundle import load_calib
from edgekit.errors import EdgekitError, unknown
from edgekit.registry import Registry

METHODS = Registry("calibration method")
FORMATS = Registry("int8 format")
TARGETS = Registry("int8 target")


class Int8Params(BaseModel):
    """Options of `--int8`; each is checked here, so other kinds refuse them by name."""

    model_config = ConfigDict(extra="forbid")

    calib: int | None = Field(None, ge=1)  # calibration images; None: all of calib.npz
    method: str = "minmax"
    max_drop: float = Field(1.0, ge=0)  # accuracy points on eval.npz
    target: str = "cpu"  # the runtime the int8 model is for: it decides the formats tried and the variant
    format: str = "auto"  # "auto": every format of the target, the fastest here that fits is kept
    per_channel: bool = True

    @property
    def variant(self) -> str:
        """The bundle variant this quantization writes (one per target, so they live side by side)."""
        return TARGETS.get(self.target).fn.variant

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:  # a ValueError, so pydantic reports it together with the other options
            raise ValueError(str(unknown("calibration method", value, METHODS.names())))
        return value

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in TARGETS:
            raise ValueError(str(unknown("int8 target", value, TARGETS.names())))
        return value

    @field_validator("format")
    @classmethod
    def _format_of_target(cls, value: str, info: ValidationInfo) -> str:
        if value != "auto" and value not in FORMATS:
            raise ValueError(str(unknown("int8 format", value, ["auto", *FORMATS.names()])))
        target = info.data.get("target")  # absent when the target itself was refused
        formats = TARGETS.get(target).fn.formats if target else ()
        if value != "auto" and target and value not in formats:
            raise ValueError(
                f"{value} is not for --target {target}, which takes {', '.join(['auto', *formats])}"
            )
        return value


@dataclass(frozen=True)
class Format:
    """Activation type and weight range of a QDQ int8 model; weights are always signed int8."""

    activations: str  # onnxruntime QuantType name
    reduce_range: bool  # 7-bit weights: avoids int16 saturation of u8×s8 products on AVX2 without VNNI
    symmetric: bool = False  # zero points all 0, activations too (TensorRT takes nothing else)

    def options(self) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType

        return {
            "activation_type": QuantType[self.activations],
            "weight_type": QuantType.QInt8,
            "reduce_range": self.reduce_range,
        }

    def extra(self) -> dict[str, Any]:
        """onnxruntime `extra_options` this format adds."""
        return {"ActivationSymmetric": True, "WeightSymmetric": True} if self.symmetric else {}


@dataclass(frozen=True)
class Target:
    """What a runtime can take: the formats `--format auto` tries, and the variant the result becomes."""

    formats: tuple[str, ...]
    variant: str


FORMATS.register("s8s8")(Format("QInt8", False))
FORMATS.register("u8s8")(Format("QUInt8", False))
FORMATS.register("u8s8-7bit")(Format("QUInt8", True))
FORMATS.register("s8s8-symmetric")(Format("QInt8", False, symmetric=True))
# CPU: whichever is fastest on this host (u8s8 on AVX2, s8s8 with VNNI). TensorRT: signed, symmetric QDQ
# (explicit quantization) only; it becomes `int8-trt`, beside the CPU `int8`.
TARGETS.register("cpu")(Target(("s8s8", "u8s8", "u8s8-7bit"), "int8"))
TARGETS.register("trt")(Target(("s8s8-symmetric",), "int8-trt"))
for _method in ("MinMax", "Entropy", "Percentile"):
    METHODS.register(_method.lower())(_method)  # onnxruntime CalibrationMethod member names


@dataclass
class Candidate:
    format: str
    file: Path
    accuracy: float
    agreement: float
    drop: float  # points
    excluded: list[str] = field(default_factory=list)
    ms: float | None = None

    def fits(self, max_drop: float) -> bool:
        return self.drop <= max_drop + 1e-9

    def summary(self) -> dict[str, Any]:
        keys = ("format", "accuracy", "agreement", "drop", "excluded", "ms")
        return {k: getattr(self, k) for k in keys}


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization logs warnings through the root logger; the report says what matters."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class _Reader:
    """Calibration batches in the shape the model takes (a fixed-batch model gets exactly its batch)."""

    def __init__(self, name: str, x: np.ndarray, batch: int | None):
        size = batch or 64
        x = np.resize(x, (-(-len(x) // size) * size, *x.shape[1:])) if batch else x  # repeat to fill
        self._batches = iter([{name: x[i : i + size]} for i in range(0, len(x), size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class Quantizer:
    """quantize_static on one pre-processed model, calibrated once (onnxruntime's calibration cache)."""

    def __init__(self, job: Any, params: Int8Params):
        from onnxruntime.quantization import CalibrationMethod

        self.job, self.params = job, params
        self.method = CalibrationMethod[METHODS.get(params.method).fn]
        calib = load_calib(job.bundle)
        if params.calib is not None and params.calib > len(calib):
            raise EdgekitError(
                f"--calib {params.calib}: the bundle carries {len(calib)} calibration images; "
                f"allowed 1..{len(calib)}"
            )
        self.calib = calib[: params.calib]
        self.pre = job.work / "pre.onnx"
        with quiet():
            pre_process(job.source, self.pre)
        self.graph = onnx.load(str(self.pre)).graph
        self.cache = job.work / "ranges.json"
        self.depthwise = depthwise_weights(self.graph)
        # Per-tensor weights crush the small channels of a depthwise conv whose channels differ in range
        # (BatchNorm folding makes them differ): those stay per-channel whatever the setting.
        overrides = {} if params.per_channel else {w: [{"axis": 0}] for w in self.depthwise.values()}
        # Float biases: onnxruntime still fuses QLinearConv/QGemm (it quantizes the bias when it loads the
        # model, measured: the same kernels), and the file saves the per-channel bias scales and their nodes.
        self.extra = {"TensorQuantOverrides": overrides, "QuantizeBias": False}
        self.count = 0

    def __call__(self, fmt: str, exclude: list[str] = (), only: list[str] = ()) -> Path:
        from onnxruntime.quantization import QuantFormat, quantize_static

        self.count += 1
        out = self.job.work / f"q{self.count}.onnx"
        reader = _Reader(self.job.input, self.calib, self.job.fixed_batch)
        with quiet():
            quantize_static(
                str(self.pre),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=self.params.per_channel,
                nodes_to_quantize=list(only),
                nodes_to_exclude=list(exclude),
                calibrate_method=self.method,
                calibration_cache_path=str(self.cache),
                extra_options={**self.extra, **FORMATS.get(fmt).fn.extra()},
                **FORMATS.get(fmt).fn.options(),
            )
        return out

    def quantizable(self) -> list[str]:
        """Names of the nodes onnxruntime's QDQ quantizer may quantize (the candidates to keep in fp32)."""
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        ops = set(QDQRegistry) | set(QLinearOpsRegistry)
        return [n.name for n in self.graph.node if n.op_type in ops and n.name]


def pre_process(model: Path, out: Path) -> None:
    """onnxruntime's pre-processing (shape inference, graph optimization) before quantizing.

    Its symbolic shape inference, meant for transformers' dynamic sequence lengths, is skipped: these
    models have one symbolic dimension, the batch, which ONNX shape inference handles, and it took 6.8 s
    of a 6.9 s pre-processing of mobilenet_tiny here (mostly importing sympy).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(model), str(out), skip_symbolic_shape=True)


def depthwise_weights(graph: onnx.GraphProto) -> dict[str, str]:
    """Depthwise Conv node name → its weight initializer (one input channel per group, several groups)."""
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    found = {}
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if shape and group > 1 and shape[1] == 1 and group == shape[0]:
            found[node.name] = node.input[1]
    return found


def choose(job: Any, params: Int8Params, timing_repeat: int) -> tuple[Candidate, list[Candidate], Quantizer]:
    """Quantize in each candidate format within --max-drop, time those that fit; the fastest wins."""
    quantizer = Quantizer(job, params)
    formats = TARGETS.get(params.target).fn.formats if params.format == "auto" else [params.format]
    candidates = [_fit(job, quantizer, fmt, params.max_drop) for fmt in formats]
    fitting = [c for c in candidates if c.fits(params.max_drop) and _quantized(c.file)]
    if not fitting:
        best = min(candidates, key=lambda c: c.drop)
        raise EdgekitError(
            f"--max-drop {params.max_drop:g}: no int8 model within the limit (the best, {best.format} with "
            f"{len(best.excluded)} nodes kept fp32, drops {best.drop:.2f} points); raise --max-drop"
        )
    times = job.latency({"fp32": job.source, **{c.format: c.file for c in fitting}}, timing_repeat)
    for c in fitting:
        c.ms = times[c.format]
    job.fp32_ms = times["fp32"]
    return min(fitting, key=lambda c: c.ms), candidates, quantizer


def _fit(job: Any, quantize: Quantizer, fmt: str, max_drop: float) -> Candidate:
    """All nodes quantized; then, while the drop exceeds the limit, the most sensitive kept in fp32."""
    candidate = _score(job, fmt, quantize(fmt), [])
    if candidate.fits(max_drop):
        return candidate
    for node in sensitivity(job, quantize, fmt):
        excluded = [*candidate.excluded, node]
        candidate = _score(job, fmt, quantize(fmt, exclude=excluded), excluded)
        if candidate.fits(max_drop):
            break
    return candidate


def _score(job: Any, fmt: str, file: Path, excluded: list[str]) -> Candidate:
    predicted = job.predict(file)
    accuracy = float((predicted == job.y).mean())
    agreement = float((predicted == job.reference).mean())
    return Candidate(fmt, file, accuracy, agreement, (job.fp32_accuracy - accuracy) * 100, excluded)


def sensitivity(job: Any, quantize: Quantizer, fmt: str) -> list[str]:
    """Quantizable nodes, most sensitive first: mean squared logit error against fp32 on the calibration
    images (not eval.npz, which judges the result) when that node alone is quantized. Nodes whose lone
    quantization changes nothing (e.g. a MaxPool with a float input) are left out."""
    reference = job.logits(job.source, quantize.calib)
    errors = {}
    for node in quantize.quantizable():
        logits = job.logits(quantize(fmt, only=[node]), quantize.calib)
        errors[node] = float(np.mean((logits - reference) ** 2))
    return [n for n in sorted(errors, key=errors.get, reverse=True) if errors[n] > 0]


def _quantized(file: Path) -> bool:
    """Whether any weight is stored as int8 (with every node excluded, a model is fp32 with extra steps)."""
    model = onnx.load(str(file))
    return any(
        numpy_helper.to_array(t).dtype in (np.int8, np.uint8) and t.dims for t in model.graph.initializer
    )
