"""`edgekit quantize`: int8, fp16 and dynamic variants, --max-drop, depthwise handling, lean files, errors."""

from __future__ import annotations

import collections
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import train_tiny_runs
from onnx import numpy_helper
from test_export import MODELS, quiet  # the export tests' tiny models and quiet console
from typer.testing import CliRunner

from edgekit.bench.run import bench
from edgekit.bundle import load_calib, load_eval, read_bundle
from edgekit.bundle_meta import CALIB_FILE
from edgekit.cli import app
from edgekit.data import prepare
from edgekit.export.write import export_run
from edgekit.ort_providers import trt_int8_problem
from edgekit.quantize.int8 import pre_process
from edgekit.quantize.lean import make_lean
from edgekit.quantize.quantize import Job, quantize_bundle
from edgekit.runtimes import RuntimeUnavailable, runtime

runner = CliRunner()
FAST = {"timing_repeat": 1}  # one timing round: the tests check behaviour, never speed


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """lenet_2k's model (3 epochs) and its depthwise-separable twin (2 epochs), exported; tests copy them."""
    runs = train_tiny_runs(
        tmp_path_factory, "quantize", {"lenet": (MODELS["lenet"], 3), "lenet_dw": (MODELS["lenet_dw"], 2)}
    )
    return {name: export_run(run_dir, run_dir.parent.parent / "export") for name, run_dir in runs.items()}


def copy(bundle: Path, dest: Path) -> Path:
    return Path(shutil.copytree(bundle, dest / bundle.name))


def top1(model: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].argmax(1)


@pytest.fixture(scope="module")
def variants(bundles, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """One bundle with all three variants added, and the reports."""
    bundle = copy(bundles["lenet"], tmp_path_factory.mktemp("variants"))
    reports = {kind: quantize_bundle(bundle, kind, **FAST) for kind in ("int8", "fp16", "dynamic")}
    return bundle, reports


def test_calibration_images_come_from_the_train_split(bundles):
    meta, _ = read_bundle(bundles["lenet"])
    calib, (x, _) = load_calib(bundles["lenet"]), load_eval(bundles["lenet"])
    assert meta.calib.split == "train" and meta.calib.images == len(calib) == 300
    images = prepare("digits", {}, None, 0.15, 0.15).train[0].numpy().reshape(-1, 64)
    train = (images / 255 - meta.input.mean[0]) / meta.input.std[0]
    a, b = calib.reshape(len(calib), -1).astype(np.float64), train
    distance = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T  # squared, calib × train
    assert distance.min(1).max() < 1e-6  # every calibration image is a training image
    assert x.shape[1:] == calib.shape[1:]


def test_variants_load_and_agree_with_fp32(variants):
    bundle, reports = variants
    x, y = load_eval(bundle)
    reference = top1(bundle / "model.onnx", x)
    for name, file in (("int8", "model.int8.onnx"), ("fp16", "model.fp16.onnx")):
        agreement = (top1(bundle / file, x) == reference).mean()
        assert agreement >= 0.95, (name, agreement)
        assert reports[name]["agreement"] == pytest.approx(agreement)
    assert (top1(bundle / "model.int8-dynamic.onnx", x) == reference).mean() >= 0.95
    int8 = reports["int8"]
    assert int8["drop"] <= 1.0 and int8["fp32_accuracy"] == pytest.approx((reference == y).mean())
    assert {c["format"] for c in int8["details"]["candidates"]} == {"s8s8", "u8s8", "u8s8-7bit"}
    assert int8["details"]["format"] in {c["format"] for c in int8["details"]["candidates"] if c["ms"]}
    assert int8["speed"]["fp32_ms"] > 0 and int8["speed"]["speedup"] > 0


def test_edgekit_json_describes_each_variant(variants):
    bundle, _ = variants
    meta, paths = read_bundle(bundle)  # also runs onnx.checker on every variant file
    assert set(meta.variants) == {"fp32", "int8", "fp16", "int8-dynamic"}
    for name, dtype in (("int8", "int8"), ("fp16", "float16"), ("int8-dynamic", "int8")):
        v = meta.variants[name]
        assert v.dtype == dtype and v.source == "fp32" and v.bytes == paths.variants[name].stat().st_size
        assert 0 < v.accuracy <= 1 and 0 < v.agreement <= 1
    int8 = meta.variants["int8"].model_dump()
    assert int8["method"] == "minmax" and int8["calib_images"] == 300 and int8["weights"] == "per-channel"


def test_int8_file_is_lean_and_smaller_than_fp32(variants):
    bundle, reports = variants
    fp32, int8 = onnx.load(str(bundle / "model.onnx")), onnx.load(str(bundle / "model.int8.onnx"))
    assert not int8.metadata_props and not int8.graph.value_info and not int8.doc_string
    assert not any(n.name or n.doc_string for n in int8.graph.node)
    assert max(len(t.name) for t in int8.graph.initializer) <= 3  # short names
    assert {numpy_helper.to_array(t).dtype for t in int8.graph.initializer} >= {np.dtype(np.int8)}
    assert reports["int8"]["bytes"] < 0.5 * (bundle / "model.onnx").stat().st_size
    assert reports["int8"]["bytes_per_param"] < 2.0 and not reports["int8"]["larger_than_fp32"]
    fp16 = onnx.load(str(bundle / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert {t.data_type for t in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert fp32.graph.input[0].name == int8.graph.input[0].name == "input"


def test_lean_passes_keep_outputs_bit_identical(bundles, tmp_path):
    model = onnx.load(str(bundles["lenet"] / "model.onnx"))
    x, _ = load_eval(bundles["lenet"])
    lean, kept = make_lean(model, x[:32], tmp_path)
    assert "names" in kept and "strip" in kept
    assert len(lean.SerializeToString()) < len(model.SerializeToString())
    sessions = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (model, lean)
    ]
    assert np.array_equal(*[s.run(None, {"input": x})[0] for s in sessions])


def test_bench_shows_each_variant_as_a_row(variants, tmp_path):
    bundle, _ = variants
    results = bench([bundle], ["ort-cpu"], 1, [1], tmp_path / "bench", min_window_s=0.01, windows=1)
    rows = {r["variant"]: r for r in results["rows"]}
    assert set(rows) == {"fp32", "int8", "fp16", "int8-dynamic"}
    assert rows["int8"]["agreement"] >= 0.95 and rows["fp32"]["agreement"] == 1.0
    assert rows["int8"]["bytes_per_param"] < rows["fp16"]["bytes_per_param"] < rows["fp32"]["bytes_per_param"]
    assert "int8" in (tmp_path / "bench" / "results.md").read_text()


def scale_channel_zero(model_file: Path) -> None:
    """Conv 1's output channel 0 ×1000 and conv 2's input channel 0 ÷1000: the same function in fp32 (ReLU and
    max-pool commute with a positive scale), but one activation tensor whose range is 1000× its other
    channels', which per-tensor int8 activations cannot hold."""
    model = onnx.load(str(model_file))
    first, second = [n for n in model.graph.node if n.op_type == "Conv"][:2]
    scale(model, first.input[1], (0,), 1000)
    scale(model, first.input[2], (0,), 1000)
    scale(model, second.input[1], (slice(None), 0), 1e-3)
    onnx.save(model, str(model_file))


def scale(model: onnx.ModelProto, name: str, index: tuple, factor: float) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    array = numpy_helper.to_array(tensor).copy()
    array[index] *= factor
    tensor.CopyFrom(numpy_helper.from_array(array, name))


def test_max_drop_keeps_the_sensitive_nodes_in_fp32(bundles, tmp_path):
    bundle = copy(bundles["lenet"], tmp_path)
    x, _ = load_eval(bundle)
    before = top1(bundle / "model.onnx", x)
    scale_channel_zero(bundle / "model.onnx")
    assert (top1(bundle / "model.onnx", x) == before).mean() >= 0.99  # fp32: the same model
    options = {"format": "u8s8-7bit", **FAST}
    loose = quantize_bundle(bundle, "int8", max_drop=100, **options)
    assert loose["drop"] > 20 and loose["details"]["excluded"] == []  # quantizing it all breaks it
    tight = quantize_bundle(bundle, "int8", max_drop=0.5, force=True, **options)
    assert tight["drop"] <= 0.5 and tight["agreement"] >= 0.95
    assert "/features/stage0/conv/Conv" in tight["details"]["excluded"]
    meta, _ = read_bundle(bundle)
    assert meta.variants["int8"].model_dump()["excluded"] == tight["details"]["excluded"]


def test_choices_are_made_on_val_and_never_read_the_test_set(bundles, tmp_path):
    """Shuffling eval.npz's labels (the test split) changes the reported test accuracy and nothing else:
    the nodes kept fp32 under --max-drop and every candidate's figures come from val.npz."""
    reports = {}
    for name in ("kept", "shuffled"):
        bundle = copy(bundles["lenet"], tmp_path / name)
        scale_channel_zero(bundle / "model.onnx")  # a model with a sensitive node to keep in fp32
        if name == "shuffled":
            x, y = load_eval(bundle)
            np.savez_compressed(bundle / "eval.npz", x=x, y=np.random.default_rng(0).permutation(y))
        reports[name] = quantize_bundle(bundle, "int8", max_drop=0.5, format="u8s8-7bit", **FAST)
    kept, shuffled = reports["kept"]["details"], reports["shuffled"]["details"]
    assert kept["excluded"] == shuffled["excluded"] and kept["excluded"]
    assert kept["val"] == shuffled["val"]
    drop = ("format", "accuracy", "drop", "agreement", "excluded")
    assert [{k: c[k] for k in drop} for c in kept["candidates"]] == [
        {k: c[k] for k in drop} for c in shuffled["candidates"]
    ]
    assert reports["shuffled"]["accuracy"] < reports["kept"]["accuracy"] - 0.3  # test read, for the report


def test_a_bundle_without_val_refuses_to_choose_on_test(bundles, tmp_path):
    bundle = copy(bundles["lenet"], tmp_path)
    meta = json.loads((bundle / "edgekit.json").read_text())
    meta.pop("val")
    (bundle / "edgekit.json").write_text(json.dumps(meta))
    (bundle / "val.npz").unlink()
    result = runner.invoke(app, ["quantize", str(bundle), "--int8"])
    assert result.exit_code == 2 and "bundle has no val set" in " ".join(result.output.split())
    assert not (bundle / "model.int8.onnx").exists()


def kill_channel_under_depthwise(model_file: Path) -> None:
    """A dead channel (ReLU output always 0) feeding a depthwise conv whose weights for it are ×1000: what
    BatchNorm folding does to a depthwise conv after a dead channel. One channel then sets the range of a
    per-tensor weight scale and every other channel's weights round to zero."""
    model = onnx.load(str(model_file))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = next(n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute))
    before = convs[convs.index(depthwise) - 1]
    scale(model, before.input[1], (0,), 0)
    tensor = next(t for t in model.graph.initializer if t.name == before.input[2])
    bias = numpy_helper.to_array(tensor).copy()
    bias[0] = -1
    tensor.CopyFrom(numpy_helper.from_array(bias, tensor.name))
    scale(model, depthwise.input[1], (0,), 1000)
    onnx.save(model, str(model_file))


def test_depthwise_weights_stay_per_channel_under_per_tensor(bundles, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_static

    bundle = copy(bundles["lenet_dw"], tmp_path)
    kill_channel_under_depthwise(bundle / "model.onnx")
    x, _ = load_eval(bundle)
    reference = top1(bundle / "model.onnx", x)
    # onnxruntime's plain per-tensor quantization: the depthwise conv loses every channel but one.
    pre_process(bundle / "model.onnx", tmp_path / "pre.onnx")
    batches = iter([{"input": load_calib(bundle)}])
    reader = type("Reader", (), {"get_next": lambda self: next(batches, None)})()
    logging.disable(logging.WARNING)
    try:
        quantize_static(str(tmp_path / "pre.onnx"), str(tmp_path / "plain.onnx"), reader,
                        activation_type=QuantType.QUInt8, reduce_range=True, per_channel=False)  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
    assert (top1(tmp_path / "plain.onnx", x) == reference).mean() < 0.5
    report = quantize_bundle(bundle, "int8", per_channel=False, max_drop=100, format="u8s8-7bit", **FAST)
    assert report["agreement"] >= 0.9 and report["details"]["excluded"] == []
    assert report["details"]["depthwise"]["nodes"] == ["/features/stage1/conv/dw/Conv"]
    model = onnx.load(str(bundle / "model.int8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_scales = {
        inits[n.input[0]].shape[1]: inits[n.input[1]].shape  # in-channels per group → scale shape
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).ndim == 4
    }
    assert weight_scales[1] == (8,)  # depthwise: one scale per channel
    assert weight_scales[8] == ()  # the pointwise conv after it: one scale (per-tensor)


@pytest.fixture
def untimed(monkeypatch):
    """The CLI times each new variant against fp32 (five rounds); these tests check files, not speed."""
    monkeypatch.setattr(Job, "latency", lambda self, models, repeat: dict.fromkeys(models, 1.0))


def test_existing_variant_is_kept_unless_forced(bundles, tmp_path, untimed):
    bundle = copy(bundles["lenet"], tmp_path)
    assert runner.invoke(app, ["quantize", str(bundle), "--fp16"]).exit_code == 0
    before, meta = (bundle / "model.fp16.onnx").read_bytes(), (bundle / "edgekit.json").read_text()
    result = runner.invoke(app, ["quantize", str(bundle), "--fp16"])
    assert result.exit_code == 2 and "model.fp16.onnx: already exists; pass --force" in result.output
    assert (bundle / "model.fp16.onnx").read_bytes() == before and (
        bundle / "edgekit.json"
    ).read_text() == meta
    result = runner.invoke(app, ["quantize", str(bundle), "--fp16", "--force"])
    assert result.exit_code == 0 and "top-1 agreement with fp32" in result.output
    assert json.loads((bundle / "edgekit.json").read_text())["variants"]["fp16"]["source"] == "fp32"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "choose one of --int8, --fp16, --dynamic"),
        (["--int8", "--fp16"], "choose one of --int8, --fp16, --dynamic"),
        (["--int8", "--calib", "0"], "--calib 0: Input should be greater than or equal to 1"),
        (
            ["--int8", "--calib", "5000"],
            "--calib 5000: the bundle carries 300 calibration images; allowed 1..300",
        ),
        (["--fp16", "--calib", "5"], "--calib: not an option of --fp16 (only --int8 takes it)"),
        (["--int8", "--method", "minmx"], "unknown calibration method 'minmx' (did you mean 'minmax'?)"),
        (["--int8", "--format", "u8"], "unknown int8 format 'u8' (did you mean 'u8s8'?)"),
        (["--int8", "--target", "trx"], "unknown int8 target 'trx' (did you mean 'trt'?)"),
        (
            ["--int8", "--target", "trt", "--format", "u8s8"],
            "u8s8 is not for --target trt, which takes auto, s8s8-symmetric",
        ),
        (["--fp16", "--target", "trt"], "--target: not an option of --fp16 (only --int8 takes it)"),
        (["--int8", "--max-drop", "-1"], "--max-drop -1.0: Input should be greater than or equal to 0"),
        (["--kind", "fp61"], "unknown quantization 'fp61' (did you mean 'fp16'?)"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(bundles, tmp_path, args, message):
    bundle = copy(bundles["lenet"], tmp_path)
    result = runner.invoke(app, ["quantize", str(bundle), *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in bundle.iterdir()) == sorted(p.name for p in bundles["lenet"].iterdir())


def test_bundle_without_calibration_data(bundles, tmp_path, untimed):
    bundle = copy(bundles["lenet"], tmp_path)
    meta = json.loads((bundle / "edgekit.json").read_text())
    meta["calib"] = None  # as exported before calib.npz existed
    (bundle / "edgekit.json").write_text(json.dumps(meta))
    (bundle / CALIB_FILE).unlink()
    result = runner.invoke(app, ["quantize", str(bundle), "--int8"])
    assert result.exit_code == 2 and "bundle has no calibration data reachable" in result.output
    assert not (bundle / "model.int8.onnx").exists()
    assert runner.invoke(app, ["quantize", str(bundle), "--fp16"]).exit_code == 0  # fp16 needs none


def test_already_quantized_model_is_refused(variants, tmp_path):
    bundle = copy(variants[0], tmp_path)
    shutil.copy(bundle / "model.int8.onnx", bundle / "model.onnx")
    result = runner.invoke(app, ["quantize", str(bundle), "--dynamic", "--force"])
    assert result.exit_code == 2
    assert "model.onnx: already quantized (DequantizeLinear, QuantizeLinear nodes)" in result.output


def test_damaged_calibration_file(bundles, tmp_path):
    bundle = copy(bundles["lenet"], tmp_path)
    (bundle / CALIB_FILE).write_bytes(b"PK\x03\x04 broken zip")
    result = runner.invoke(app, ["quantize", str(bundle), "--int8"])
    assert result.exit_code == 2 and "calib.npz: not a readable calibration set" in result.output


def test_fixed_batch_bundle(bundles, tmp_path):
    """A bundle exported with --batch 4 takes exactly 4 images: calibration, scoring and timing feed it 4."""
    source = Path(read_bundle(bundles["lenet"])[0].source.run)
    bundle = export_run(source, tmp_path, batch="4", console=quiet())
    report = quantize_bundle(bundle, "int8", format="u8s8-7bit", **FAST)
    assert report["agreement"] >= 0.95 and report["speed"]["batch"] == 4
    session = ort.InferenceSession(str(bundle / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": load_eval(bundle)[0][:4]})[0].shape == (4, 10)


def test_target_trt_is_signed_symmetric_qdq_beside_the_cpu_int8(bundles, tmp_path, untimed):
    """What TensorRT builds (explicit quantization): QDQ, int8 (not uint8), every zero point 0."""
    bundle = copy(bundles["lenet"], tmp_path)
    result = runner.invoke(app, ["quantize", str(bundle), "--int8", "--target", "trt"])
    assert result.exit_code == 0, result.output
    model = onnx.load(str(bundle / "model.int8-trt.onnx"))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # + weights
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert all(len(n.input) == 3 and inits[n.input[2]].dtype == np.int8 for n in quantize_nodes)
    zero_points = [inits[n.input[2]] for n in model.graph.node if n.op_type.endswith("QuantizeLinear")]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    weights = [
        inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    ]
    assert weights and all(w.dtype == np.int8 for w in weights)
    assert trt_int8_problem(model) is None

    meta, _ = read_bundle(bundle)
    variant = meta.variants["int8-trt"]
    assert variant.dtype == "int8" and variant.target == "trt" and variant.format == "s8s8-symmetric"
    assert "int8" not in meta.variants  # the CPU int8 is its own variant, untouched
    x, y = load_eval(bundle)
    fp32, trt = top1(bundle / "model.onnx", x), top1(bundle / "model.int8-trt.onnx", x)  # onnxruntime CPU
    assert (trt == fp32).mean() >= 0.95 and abs((trt == y).mean() - (fp32 == y).mean()) <= 0.02


def test_a_cpu_int8_variant_is_refused_on_tensorrt_with_the_fix(bundles, tmp_path, untimed):
    bundle = copy(bundles["lenet"], tmp_path)
    quantize_bundle(bundle, "int8", format="u8s8", **FAST)  # unsigned activations, as picked on AVX2
    meta, _ = read_bundle(bundle)
    assert meta.variants["int8"].target == "cpu"
    target = SimpleNamespace(path=bundle, meta=meta)
    with pytest.raises(RuntimeUnavailable, match=r"uint8 zero point.*--int8 --target trt"):
        runtime("ort-trt").load(target, "int8", threads=1)


def test_the_variant_a_kind_writes_follows_its_target():
    """What the pipeline checks on a rerun: int8 for TensorRT is int8-trt, not the CPU int8."""
    from edgekit.quantize.quantize import variant_of

    assert variant_of("int8", {}) == "int8"
    assert variant_of("int8", {"target": "trt", "calib": 64}) == "int8-trt"
    assert variant_of("dynamic", {}) == "int8-dynamic"
