"""edgekit.ort_providers: provider chains and TensorRT options (built without a GPU), TensorRT's int8 check,
and the one-line errors for GPU runtimes and devices that are not there."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_bench import random_bundle
from typer.testing import CliRunner

from edgekit.bench.run import bench
from edgekit.cli import app
from edgekit.errors import EdgekitError
from edgekit.ort_providers import CPU, CUDA, TRT, providers_for, tensorrt_options, trt_int8_problem
from edgekit.runtimes import RuntimeUnavailable, runtime

GPU_MISSING = pytest.mark.skipif(
    {CUDA, TRT} <= set(ort.get_available_providers()), reason="needs an onnxruntime without GPU providers"
)


def meta(batch: int | str = "batch", dtype: str = "float32") -> SimpleNamespace:
    """The parts of a BundleMeta the provider options read."""
    return SimpleNamespace(
        input=SimpleNamespace(name="input", shape=[batch, 1, 8, 8]),
        variants={"v": SimpleNamespace(file="model.onnx", dtype=dtype)},
    )


def test_cpu_and_cuda_chains_end_on_the_cpu():
    assert providers_for(CPU, meta(), "v") == [CPU]
    assert providers_for(CUDA, meta(), "v") == [CUDA, CPU]


def test_tensorrt_falls_back_to_cuda_then_cpu_with_cache_and_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    (first, options), *rest = providers_for(TRT, meta(), "v")
    assert first == TRT and rest == [CUDA, CPU]
    assert options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    # one engine for every batch from 1 to 1024, tuned for 256 (bench's throughput batch)
    assert options["trt_profile_min_shapes"] == "input:1x1x8x8"
    assert options["trt_profile_opt_shapes"] == "input:256x1x8x8"
    assert options["trt_profile_max_shapes"] == "input:1024x1x8x8"
    assert "trt_fp16_enable" not in options and "trt_int8_enable" not in options  # fp32 stays fp32


@pytest.mark.parametrize(
    ("dtype", "flags"),
    [("float16", {"trt_fp16_enable"}), ("int8", {"trt_int8_enable", "trt_fp16_enable"})],
)
def test_tensorrt_precision_flags_follow_the_variant(dtype, flags, tmp_path):
    options = tensorrt_options("input", ["batch", 3, 32, 32], dtype, tmp_path)
    assert {k for k, v in options.items() if k.endswith("_enable") and v == "True"} == {
        "trt_engine_cache_enable",
        *flags,
    }
    assert "trt_int8_calibration_table_name" not in options  # QDQ: the scales are in the model


def test_a_fixed_batch_needs_no_shape_profile(tmp_path):
    options = tensorrt_options("input", [4, 1, 8, 8], "float32", tmp_path)
    assert not [k for k in options if k.startswith("trt_profile")]


def qdq_model(zero: np.ndarray | None, weight_dtype=np.int8, dynamic: bool = False) -> onnx.ModelProto:
    """input → QuantizeLinear → DequantizeLinear → Conv with a DequantizeLinear'd int8 (or other) weight."""
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.ones((2, 1, 1, 1), weight_dtype), "wq"),
    ]
    q_inputs = ["input", "s"]
    if zero is not None:
        inits.append(numpy_helper.from_array(zero, "z"))
        q_inputs.append("z")
    nodes = [
        helper.make_node("QuantizeLinear", q_inputs, ["q"]),
        helper.make_node("DequantizeLinear", ["q", *q_inputs[1:]], ["dq"]),
        helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),  # zero point dropped: the weight's type
        helper.make_node("Conv", ["dq", "w"], ["logits"]),
    ]
    if dynamic:
        nodes.insert(0, helper.make_node("DynamicQuantizeLinear", ["input"], ["a", "b", "c"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tensorrt_takes_signed_symmetric_qdq_only():
    assert trt_int8_problem(qdq_model(np.array(0, np.int8))) is None
    assert "uint8" in trt_int8_problem(qdq_model(np.array(0, np.uint8)))
    assert "asymmetric" in trt_int8_problem(qdq_model(np.array(3, np.int8)))
    assert "unsigned" in trt_int8_problem(qdq_model(None))  # QuantizeLinear's default output is uint8
    assert "unsigned" in trt_int8_problem(qdq_model(np.array(0, np.int8), weight_dtype=np.uint8))
    assert "DynamicQuantizeLinear" in trt_int8_problem(qdq_model(np.array(0, np.int8), dynamic=True))


def int8_bundle(tmp_path: Path, zero: np.ndarray) -> SimpleNamespace:
    onnx.save(qdq_model(zero), str(tmp_path / "model.int8.onnx"))
    variants = {"int8": SimpleNamespace(file="model.int8.onnx", dtype="int8")}
    return SimpleNamespace(path=tmp_path, meta=SimpleNamespace(variants=variants))


def test_an_unsigned_int8_variant_on_ort_trt_says_to_requantize(tmp_path):
    with pytest.raises(RuntimeUnavailable, match=r"re-quantize it for TensorRT: .*--int8 --target trt$"):
        runtime("ort-trt").load(int8_bundle(tmp_path, np.array(128, np.uint8)), "int8", threads=1)


@GPU_MISSING
@pytest.mark.parametrize("name", ["ort-cuda", "ort-trt"])
def test_a_named_gpu_runtime_without_its_provider_is_a_one_line_error(name, tmp_path):
    path = random_bundle(tmp_path)
    with pytest.raises(EdgekitError, match=f"--runtime {name}: .*; install the GPU set.*: pip uninstall"):
        bench([path], [name], 1, [1], tmp_path / "out")
    result = CliRunner().invoke(app, ["bench", str(path), "--runtime", name, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "onnxruntime-gpu" in lines[0] and "docs/gpu.md" in lines[0]
    assert not (tmp_path / "o").exists()  # refused before any measurement


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda_is_a_one_line_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {arch: lenet}\ntrack: {wandb: disabled}\n")
    args = ["train", str(recipe), "train.device=cuda", "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: train.device = 'cuda': CUDA is not available here; use auto or cpu"
    ]
    assert not (tmp_path / "runs").exists()
