"""edgekit.runtimes: the registry, ORT sessions through IOBinding, torch runtimes from a run checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.errors import EdgekitError
from edgekit.runtimes import RUNTIMES, OrtSession, RuntimeUnavailable, runtime


def linear_model(path: Path, seed: int = 0) -> np.ndarray:
    """Write Flatten → Gemm (1×8×8 → 10, dynamic batch) to `path`; return its weight matrix."""
    w = np.random.default_rng(seed).standard_normal((10, 64)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w")],
    )
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    return w


def bundle_at(path: Path, source_run: str = "runs/none") -> SimpleNamespace:
    # The parts of a BundleMeta that a runtime reads.
    meta = SimpleNamespace(
        variants={"fp32": SimpleNamespace(file="model.onnx")},
        source=SimpleNamespace(run=source_run, checkpoint="best.pt"),
    )
    return SimpleNamespace(path=path, meta=meta)


def test_registry_names_and_did_you_mean():
    # A subset, not the exact list: registering a runtime must not force an edit here.
    assert {"ort-cpu", "ort-cuda", "ort-trt", "torch-cpu", "torch-cuda"} <= set(RUNTIMES.names())
    with pytest.raises(EdgekitError, match="unknown runtime 'torch-gpu' \\(did you mean 'torch-cpu'\\?\\)"):
        runtime("torch-gpu")


def test_ort_cpu_matches_plain_session_run_at_each_batch(tmp_path):
    w = linear_model(tmp_path / "model.onnx")
    rt = runtime("ort-cpu")
    assert rt.available(None) == (True, "")
    session = rt.load(bundle_at(tmp_path), "fp32", threads=1)
    plain = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for batch in (1, 3, 1, 3):  # new inputs into already-bound buffers must be seen
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        got = rt.run(session, x).copy()
        np.testing.assert_allclose(got, plain.run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, x.reshape(batch, 64) @ w.T, rtol=1e-4, atol=1e-4)


def test_public_call_fallback_gives_the_same_results(tmp_path):
    """`OrtSession.caller` calls onnxruntime's private `_sess` for speed; a session without it (a future
    onnxruntime) falls back to the public `run_with_iobinding`, with the same results."""

    class PublicOnly:  # what onnxruntime documents of an InferenceSession, and nothing private
        def __init__(self, session):
            self.run, self.io_binding = session.run, session.io_binding
            self.run_with_iobinding = session.run_with_iobinding

    w = linear_model(tmp_path / "model.onnx", seed=3)
    fast = OrtSession(tmp_path / "model.onnx", ["CPUExecutionProvider"], 1)
    public = OrtSession(tmp_path / "model.onnx", ["CPUExecutionProvider"], 1)
    public.session = PublicOnly(public.session)
    rng = np.random.default_rng(4)
    for batch in (1, 2, 1):
        x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
        np.testing.assert_array_equal(public.run(x), fast.run(x))
        np.testing.assert_allclose(public.run(x), x.reshape(batch, 64) @ w.T, rtol=1e-4, atol=1e-4)


def test_gpu_providers_say_why_they_are_unavailable():
    have = ort.get_available_providers()
    for name, provider in (("ort-cuda", "CUDAExecutionProvider"), ("ort-trt", "TensorrtExecutionProvider")):
        ok, reason = runtime(name).available(None)
        assert ok == (provider in have)
        assert ok or provider in reason


def test_unreadable_model_is_a_clear_error(tmp_path):
    with pytest.raises(EdgekitError, match="onnxruntime cannot load it"):
        OrtSession(b"not an onnx model", ["CPUExecutionProvider"], 1)


def test_torch_runtime_without_a_checkpoint_is_unavailable(tmp_path):
    ok, reason = runtime("torch-cpu").available(bundle_at(tmp_path, str(tmp_path / "runs" / "x")))
    assert not ok and "checkpoint not found" in reason


def test_torch_cpu_runs_the_checkpoint_and_agrees_with_its_onnx_export(tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.models import build_model
    from edgekit.runs import save_checkpoint

    torch.manual_seed(0)
    spec = {"arch": "lenet", "options": {"channels": [4, 8]}, "in_channels": 1, "num_classes": 10}
    model = build_model(spec["arch"], spec["options"], 1, 10, 8).eval()
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    save_checkpoint(run / "best.pt", {**spec, "image_size": 8, "model": model.state_dict()})
    bundle = tmp_path / "export" / "tiny"
    bundle.mkdir(parents=True)
    x = torch.randn(5, 1, 8, 8)
    torch.onnx.export(
        model, (x,), str(bundle / "model.onnx"), dynamo=False, input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    target = bundle_at(bundle, "runs/tiny")  # relative: found next to the export folder's parent
    rt = runtime("torch-cpu")
    assert rt.available(target) == (True, "")
    assert rt.file(target, "fp32") == run / "best.pt"
    got = rt.run(rt.load(target, "fp32", threads=1), x.numpy())
    ref = runtime("ort-cpu")
    want = ref.run(ref.load(target, "fp32", 1), x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeUnavailable, match="fp32 checkpoint only"):
        rt.load(target, "int8", 1)
    json.dumps(rt.available(target))  # plain data, as results.json stores it


def test_float16_input_is_fed_float16(tmp_path):
    w = np.eye(10, 64, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["c"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["c"], ["f"]),
            helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1),
        ],
        "half",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.arange(128, dtype=np.float32).reshape(2, 1, 8, 8) / 128
    got = OrtSession(model, ["CPUExecutionProvider"], 1).run(x)
    np.testing.assert_allclose(got, x.reshape(2, 64)[:, :10], atol=1e-3)


def test_sessions_take_their_settings_from_options_which_a_subclass_can_change(tmp_path):
    """bench/ort_floor.py compares settings by overriding `options` for the model and its floor alike."""
    linear_model(tmp_path / "model.onnx")
    saved = tmp_path / "optimized.onnx"

    class Saving(OrtSession):
        def options(self, threads):
            options = super().options(threads)
            options.optimized_model_filepath = str(saved)
            return options

    session = Saving(tmp_path / "model.onnx", ["CPUExecutionProvider"], 1)
    assert saved.is_file()  # onnxruntime was given the subclass's options
    shipped = session.options(1)
    assert shipped.intra_op_num_threads == 1 and session.options(None).intra_op_num_threads == 0
    assert shipped.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert not shipped.enable_cpu_mem_arena  # the arena cost lenet_2k 0.3 µs of 9.9 per call
