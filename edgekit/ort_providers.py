"""What an onnxruntime runtime asks for: its execution providers with their fallbacks, TensorRT's options
(engine cache, precision flags, the dynamic batch's shape profile), and whether TensorRT can build an int8
variant. Plain functions of the bundle's metadata, so they are tested on a machine without a GPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"

# pip's CPU `onnxruntime` and `onnxruntime-gpu` install the same module, so one must replace the other.
GPU_SET = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
INSTALL = {
    CUDA: f"install the GPU set: {GPU_SET} (docs/gpu.md)",
    TRT: f"install the GPU set and TensorRT: {GPU_SET} tensorrt (docs/gpu.md)",
}

# Where a provider's nodes go when it has no kernel for them: TensorRT → CUDA → CPU, so that a node
# TensorRT rejects runs on the GPU rather than costing two copies over PCIe per call.
FALLBACKS = {CPU: [], CUDA: [CPU], TRT: [CUDA, CPU]}

# The batch sizes TensorRT builds its engine for. Without an explicit profile it builds one for the first
# shape it sees and rebuilds (seconds) at each new batch; bench's batches are 1 and up to a few hundred.
TRT_MIN_BATCH, TRT_OPT_BATCH, TRT_MAX_BATCH = 1, 256, 1024

# TensorRT precision flags by the variant's dtype. fp16 lets TensorRT pick half-precision kernels. An int8
# variant is a QDQ model (explicit quantization): its scales come from the model, no calibration table;
# fp16 beside int8 lets the layers left unquantized (e.g. --max-drop exclusions) run in half, not fp32.
TRT_PRECISION: dict[str, dict[str, str]] = {
    "float32": {},
    "float16": {"trt_fp16_enable": "True"},
    "int8": {"trt_int8_enable": "True", "trt_fp16_enable": "True"},
}

# Operators of onnxruntime's dynamic or operator-oriented int8 formats, which TensorRT does not import.
NOT_TRT_OPS = {
    "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm",
    "QLinearAdd", "DynamicQuantizeMatMul",
}  # fmt: skip


def cache_dir() -> Path:
    """Where TensorRT keeps built engines: $EDGEKIT_CACHE/tensorrt (else ~/.cache/edgekit/tensorrt), not the
    bundle folder, which may be read-only on a device. onnxruntime names each engine by a hash of the model
    and checks the GPU and the profile, so bundles share the folder and a changed model gets a new engine."""
    root = os.environ.get("EDGEKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "edgekit") / "tensorrt"


def tensorrt_options(input_name: str, shape: list[int | str], dtype: str, cache: Path) -> dict[str, str]:
    """TensorrtExecutionProvider options for a model with input `input_name` of `shape` ([batch, C, H, W],
    batch a name when dynamic) whose weights are `dtype`."""
    options = {
        # Building an engine takes seconds to minutes; cached, a second session loads it in milliseconds.
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        **TRT_PRECISION[dtype],
    }
    if isinstance(shape[0], str):  # a dynamic batch: one engine for every batch bench and predict use
        rest = "x".join(str(d) for d in shape[1:])
        for key, batch in (("min", TRT_MIN_BATCH), ("opt", TRT_OPT_BATCH), ("max", TRT_MAX_BATCH)):
            options[f"trt_profile_{key}_shapes"] = f"{input_name}:{batch}x{rest}"
    return options


def _trt_options(meta: Any, variant: str) -> dict[str, str]:
    dtype = getattr(meta.variants[variant], "dtype", "float32")
    return tensorrt_options(meta.input.name, list(meta.input.shape), dtype, cache_dir())


OPTIONS: dict[str, Callable[[Any, str], dict[str, str]]] = {TRT: _trt_options}


def providers_for(provider: str, meta: Any, variant: str) -> list[str | tuple[str, dict[str, str]]]:
    """The `providers` argument of an InferenceSession for `variant` of a bundle with metadata `meta`."""
    options = OPTIONS[provider](meta, variant) if provider in OPTIONS else {}
    return [(provider, options) if options else provider, *FALLBACKS[provider]]


def trt_int8_problem(model: onnx.ModelProto) -> str | None:
    """Why TensorRT cannot build this int8 model, or None. TensorRT takes QDQ models with signed int8 and
    zero points of 0 (symmetric) only; edgekit's CPU int8 picks unsigned activations when they are faster
    on the host (u8s8 on AVX2), and dynamic int8 computes ranges at run time."""
    graph = model.graph
    found = sorted({n.op_type for n in graph.node} & NOT_TRT_OPS)
    if found:
        return f"{', '.join(found)} nodes, which TensorRT does not import"
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:  # zero point 0 (edgekit's lean pass drops those)
            # Without one, QuantizeLinear outputs uint8; DequantizeLinear takes its input's type.
            data = constants.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
            if node.op_type == "QuantizeLinear" or (
                data is not None and data.data_type != onnx.TensorProto.INT8
            ):
                return f"{node.name or node.op_type}: unsigned int8 (TensorRT takes signed int8)"
            continue
        zero = constants.get(node.input[2])
        if zero is None:
            continue  # computed in the graph: TensorRT reports it when it builds
        values = numpy_helper.to_array(zero)
        if values.dtype != np.int8:
            return f"{node.name or node.op_type}: {values.dtype} zero point (TensorRT takes signed int8)"
        if np.any(values != 0):
            return f"{node.name or node.op_type}: nonzero zero point (asymmetric; TensorRT takes symmetric)"
    return None


def _trt_refusal(bundle: Any, variant: str, file: Path) -> str | None:
    if getattr(bundle.meta.variants[variant], "dtype", None) != "int8":
        return None
    problem = trt_int8_problem(onnx.load(str(file), load_external_data=False))
    if problem is None:
        return None
    return (
        f"{file}: TensorRT cannot build this int8 model ({problem}); re-quantize it for TensorRT: "
        f"edgekit quantize {bundle.path} --int8 --target trt"
    )


# Variants a provider cannot take, found from the file before a session is made.
REFUSALS: dict[str, Callable[[Any, str, Path], str | None]] = {TRT: _trt_refusal}


def refusal(provider: str, bundle: Any, variant: str, file: Path) -> str | None:
    """Why `provider` cannot run `variant` (file `file`) of `bundle`, in one line; None when it can."""
    return REFUSALS[provider](bundle, variant, file) if provider in REFUSALS else None
