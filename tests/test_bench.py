"""edgekit.bench: timing, accuracy and Wilson interval, agreement, reports, compare, torch-free, errors."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from edgekit import __version__
from edgekit.bench import machine, report
from edgekit.bench.run import bench, wilson
from edgekit.errors import TRAIN_EXTRA, EdgekitError
from edgekit.timing import measure

CHW = (1, 8, 8)
FAST = {"min_window_s": 0.01, "windows": 3}


def gemm_model(w: np.ndarray, b: np.ndarray, batch: int | str = "batch", conv: bool = False) -> bytes:
    """Flatten → Gemm(w, b) on a 1×8×8 input (optionally Conv → Relu first): logits = x·wᵀ + b."""
    rng = np.random.default_rng(0)
    nodes, inits, flat_in = [], [], "input"
    if conv:
        k = numpy_helper.from_array(rng.standard_normal((1, 1, 3, 3)).astype(np.float32), "k")
        nodes += [helper.make_node("Conv", ["input", "k"], ["c"], pads=[1, 1, 1, 1])]
        nodes += [helper.make_node("Relu", ["c"], ["r"])]
        inits.append(k)
        flat_in = "r"
    nodes += [
        helper.make_node("Flatten", [flat_in], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"]),
    ]
    nodes[-1].attribute.append(helper.make_attribute("transB", 1))
    inits += [
        numpy_helper.from_array(w.astype(np.float32), "w"),
        numpy_helper.from_array(b.astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def constant_model(cls: int, **kw) -> bytes:
    """Predicts class `cls` for every image (zero weights, a one-hot bias)."""
    return gemm_model(np.zeros((10, 64)), np.eye(10)[cls], **kw)


def select_model(**kw) -> bytes:
    """Predicts the argmax of the image's first 10 pixels."""
    return gemm_model(np.eye(10, 64), np.zeros(10), **kw)


def make_bundle(root: Path, name: str, models: dict[str, bytes], x, y, batch: int | str = "batch") -> Path:
    """A bundle folder as edgekit export writes it, from ONNX bytes per variant (fp32 first)."""
    path = root / name
    path.mkdir(parents=True)
    variants = {}
    for variant, data in models.items():
        file = "model.onnx" if variant == "fp32" else f"model.{variant}.onnx"
        (path / file).write_bytes(data)
        variants[variant] = {"file": file, "bytes": len(data), "dtype": "float32"}
    np.savez(path / "eval.npz", x=np.asarray(x, np.float32), y=np.asarray(y, np.int64))
    meta = {
        "format": "edgekit-bundle/1",
        "name": name,
        "class_names": [str(i) for i in range(10)],
        "input": {"name": "input", "shape": [batch, *CHW], "layout": "NCHW", "dtype": "float32"}
        | {"mean": [0.5], "std": [0.25], "image_size": 8},
        "params": 650,
        "macs": 640,
        "accuracy": {"val": None, "test": None},
        "source": {"run": str(root / "runs" / name), "checkpoint": "best.pt", "epoch": 1},
        "eval": {"file": "eval.npz", "images": len(y)},
        "variants": variants,
        "output": {"shape": [batch, 10]},
        "recipe": {},
        "versions": {
            "edgekit": "0",
            "torch": "none",
            "onnx": onnx.__version__,
            "onnxruntime": "0",
            "opset": 17,
        },
        "parity": {"max_abs_diff": 0.0, "top1_agreement": 1.0, "images": len(y), "atol": 1e-4},
    }
    (path / "edgekit.json").write_text(json.dumps(meta))
    return path


def random_bundle(root: Path, name: str = "tiny", n: int = 20, **kw) -> Path:
    rng = np.random.default_rng(1)
    model = gemm_model(rng.standard_normal((10, 64)), np.zeros(10), conv=True)
    x = rng.standard_normal((n, *CHW))
    return make_bundle(root, name, {"fp32": model, "int8": model}, x, rng.integers(0, 10, n), **kw)


# -------------------------------------------------------------------------------------------- timing


def test_measure_gives_sane_numbers_on_a_fake_function():
    t = measure(lambda: sum(range(200)), min_window_s=0.01, windows=3)
    assert t.ms > 0 and 0 < t.p50_ms <= t.p90_ms <= t.p99_ms
    assert t.windows == 3 and len(t.window_ms) == 3 and t.calls >= 3
    assert min(t.window_ms) <= t.ms <= max(t.window_ms)  # the median window


def test_measure_rejects_bad_settings():
    with pytest.raises(ValueError):
        measure(lambda: None, min_window_s=0.01, windows=0)


def test_wilson_interval_by_hand():
    # p = 10/20 = 0.5, z² = 1.96² = 3.8416: center = (0.5 + 3.8416/40) / (1 + 3.8416/20) = 0.5,
    # half = 1.96 / 1.19208 · √(0.25/20 + 3.8416/1600) = 1.64419 · √0.014901 = 0.20070.
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.5 - 0.20070, abs=1e-4) and hi == pytest.approx(0.5 + 0.20070, abs=1e-4)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0


# --------------------------------------------------------------------------------------------- bench


def test_floor_is_timed_after_each_bundle_and_reported_as_the_median(tmp_path):
    paths = [random_bundle(tmp_path / "export" / name) for name in ("a", "b", "c")]
    results = bench(paths, ["ort-cpu"], threads=1, batches=[1], out_dir=tmp_path / "bench", **FAST)
    (floor,) = results["floor"]  # one input shape, so one floor row
    each = floor["measurements_ms"]
    assert len(each) == 3 and all(ms > 0 for ms in each)
    assert floor["latency_ms"] == sorted(each)[1]


def test_bench_writes_every_report(tmp_path):
    path = random_bundle(tmp_path / "export")
    out = tmp_path / "bench"
    results = bench([path], ["ort-cpu"], threads=1, batches=[1, 4], out_dir=out, **FAST)
    assert [(r["variant"], r["runtime"]) for r in results["rows"]] == [
        ("fp32", "ort-cpu"),
        ("int8", "ort-cpu"),
    ]
    row = results["rows"][0]
    for key in ("accuracy", "accuracy_ci95", "agreement", "bytes", "bytes_per_param", "params", "macs"):
        assert row[key] is not None, key
    assert row["latency_batch"] == 1 and row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert set(row["throughput"]) == {"4"} and row["throughput"]["4"] > 0 and row["threads"] == 1
    assert row["bytes"] == (path / "model.onnx").stat().st_size and row["agreement"] == 1.0
    assert [f["bundle"] for f in results["floor"]] == ["ort floor"] and results["floor"][0][
        "variant"
    ] == "1x8x8"

    saved = json.loads((out / "results.json").read_text())
    assert saved["machine"]["onnxruntime"] and saved["machine"]["timing"]["windows"] == 3
    assert "CPUExecutionProvider" in saved["machine"]["providers"] and len(saved["rows"]) == 2
    csv = (out / "results.csv").read_text().splitlines()
    assert "images_per_s_b4" in csv[0] and "process_peak_rss_mb" in csv[0] and len(csv) == 1 + 2 + 1
    md = (out / "results.md").read_text()
    assert "| bundle | variant | runtime |" in md and "ort floor" in md and "```" in md
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries

    again = bench([path], ["ort-cpu"], threads=1, batches=[1], out_dir=out, **FAST)  # a report: overwritten
    assert json.loads((out / "results.json").read_text())["machine"] == again["machine"]


def test_accuracy_interval_and_agreement_are_what_the_models_say(tmp_path):
    # fp32 always says 3; "int8" says argmax of the first 10 pixels, which is 3 for images 0–14, 7 after.
    x = np.zeros((20, *CHW), np.float32)
    x[:15, 0, 0, 3] = 1
    x[15:, 0, 0, 7] = 1
    y = np.array([3] * 10 + [7] * 10)
    path = make_bundle(tmp_path, "known", {"fp32": constant_model(3), "int8": select_model()}, x, y)
    rows = bench([path], ["ort-cpu"], None, [1], tmp_path / "out", **FAST)["rows"]
    fp32, int8 = rows
    assert fp32["accuracy"] == 0.5 and fp32["correct"] == 10 and fp32["agreement"] == 1.0
    assert fp32["accuracy_ci95"] == pytest.approx([0.5 - 0.20070, 0.5 + 0.20070], abs=1e-4)
    assert int8["accuracy"] == 0.75 and int8["agreement"] == 0.75  # right on 0–9 and 15–19
    assert fp32["threads"] == "default"
    # Where each fails: fp32 says 3 for all 20; int8 says 7 for images 15-19 (true 7) and 3 for 10-14.
    assert (
        fp32["confusion"][3][3] == 10
        and fp32["confusion"][7][3] == 10
        and sum(map(sum, fp32["confusion"])) == 20
    )
    assert int8["confusion"][7] == [0, 0, 0, 5, 0, 0, 0, 5, 0, 0]
    assert int8["per_class_accuracy"]["3"] == 1.0 and int8["per_class_accuracy"]["7"] == 0.5
    assert int8["per_class_accuracy"]["0"] is None  # no image of class 0
    assert (tmp_path / "out" / "confusion_known.png").read_bytes()[:4] == b"\x89PNG"


def test_the_terminal_table_fits_80_columns_without_truncation(tmp_path):
    path = random_bundle(tmp_path / "export", name="a_rather_long_bundle_name")
    results = bench([path], ["ort-cpu"], 1, [1, 32], tmp_path / "out", **FAST)
    console = Console(file=io.StringIO(), width=80)
    console.print(report.table(results))
    text = console.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert "a_rather_long_bundle_name" in first_column  # folded onto lines, never cut


def test_fixed_batch_bundle_runs_its_batch_only(tmp_path):
    x = np.zeros((10, *CHW), np.float32)  # 10 images in fixed batches of 4: the last one padded
    path = make_bundle(tmp_path, "fixed", {"fp32": constant_model(2, batch=4)}, x, [2] * 10, batch=4)
    (row,) = bench([path], ["ort-cpu"], 1, [1, 8], tmp_path / "out", **FAST)["rows"]
    assert row["accuracy"] == 1.0 and row["latency_batch"] == 4 and row["throughput"] == {}
    assert "fixed batch 4" in row["notes"][0]


def test_no_bundles_means_every_bundle_in_export_root(tmp_path):
    root = tmp_path / "export"
    random_bundle(root, "a")
    random_bundle(root, "b")
    (root / ".c.123.tmp").mkdir()  # a half-written export is not a bundle
    results = bench(None, ["ort-cpu"], 1, [1], tmp_path / "out", export_root=root, **FAST)
    assert sorted({r["bundle"] for r in results["rows"]}) == ["a", "b"]


def test_unavailable_runtimes_are_listed_with_a_reason(tmp_path):
    path = random_bundle(tmp_path)
    results = bench([path], None, 1, [1], tmp_path / "out", **FAST)
    skipped = {s["runtime"]: s["reason"] for s in results["skipped"]}
    assert (
        "CUDAExecutionProvider" in skipped["ort-cuda"] and "TensorrtExecutionProvider" in skipped["ort-trt"]
    )
    assert "checkpoint not found" in skipped["torch-cpu"]  # no run folder next to this bundle
    assert {r["runtime"] for r in results["rows"]} == {"ort-cpu"}
    assert "skipped tiny ort-cuda" in (tmp_path / "out" / "results.md").read_text()


def test_missing_matplotlib_skips_the_plot_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import` of it raises ImportError
    results = bench([random_bundle(tmp_path)], ["ort-cpu"], 1, [1], tmp_path / "out", **FAST)
    assert not (tmp_path / "out" / "pareto.png").exists()
    assert any("matplotlib is not installed" in n for n in results["notes"])


def test_bench_runs_where_torch_cannot_be_imported(tmp_path):
    fake = tmp_path / "fake"
    for name in ("torch", "torchvision"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("raise ImportError('no torch on this device')\n")
    path = random_bundle(tmp_path / "export")
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from edgekit.bench.run import bench
        r = bench([Path({str(path)!r})], ["ort-cpu", "torch-cpu", "torch-cuda"], 1, [1, 2],
                  Path({str(tmp_path / "out")!r}), min_window_s=0.01, windows=3)
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]
        print(json.dumps({{"rows": len(r["rows"]), "skipped": r["skipped"]}}))
    """)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(repo)])}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["rows"] == 2
    assert {s["runtime"]: s["reason"] for s in out["skipped"]} == {
        "torch-cpu": "torch is not installed",
        "torch-cuda": "torch is not installed",
    }


def _without_train_extra(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`edgekit ARGS` in a process where nothing of the `train` extra can be imported (a device install)."""
    script = textwrap.dedent(f"""
        import sys
        for name in {sorted(TRAIN_EXTRA)!r}:
            sys.modules[name] = None  # `import name` now fails, as where it is not installed
        from edgekit.cli import main
        sys.argv = ["edgekit", *{args!r}]
        main()
    """)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_device_install_benches_and_says_what_training_needs(tmp_path):
    path = random_bundle(tmp_path / "export")
    bench_run = _without_train_extra(["bench", str(path), "--runtime", "ort-cpu", "--out", "out"], tmp_path)
    assert bench_run.returncode == 0, bench_run.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    version = _without_train_extra(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"edgekit {__version__}"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "lenet_2k.yaml"
    train = _without_train_extra(["train", str(recipe)], tmp_path)
    assert train.returncode == 2 and "Traceback" not in train.stderr
    said = " ".join(train.stderr.split())
    assert "this command needs the `train` extra (" in said and "pip install 'edgekit[train]'" in said


# ------------------------------------------------------------------------------------------- compare


def test_compare_puts_two_machines_side_by_side(tmp_path):
    bench([random_bundle(tmp_path)], ["ort-cpu"], 1, [1], tmp_path / "pc", **FAST)
    data = json.loads((tmp_path / "pc" / "results.json").read_text())
    for row in data["rows"] + data["floor"]:
        row["latency_ms"] *= 4  # the same figures from a device four times slower
    data["machine"]["cpu"] = "Cortex-A72"
    (tmp_path / "pi").mkdir()
    (tmp_path / "pi" / "results.json").write_text(json.dumps(data))
    merged = report.compare([tmp_path / "pc" / "results.json", tmp_path / "pi" / "results.json"], None)
    assert [m["label"] for m in merged["machines"]] == ["pc", "pi"] and merged["machines"][1][
        "cpu"
    ] == "Cortex-A72"
    keys = {(r["bundle"], r["variant"], r["runtime"]) for r in merged["rows"]}
    assert keys == {
        ("tiny", "fp32", "ort-cpu"),
        ("tiny", "int8", "ort-cpu"),
        ("ort floor", "1x8x8", "ort-cpu"),
    }
    assert all(r["ratio"][0] == 1.0 and r["ratio"][1] == pytest.approx(4.0) for r in merged["rows"])


def test_compare_refuses_bad_files(tmp_path):
    (tmp_path / "x.json").write_text('{"rows": []}')
    with pytest.raises(EdgekitError, match="two or more"):
        report.compare([tmp_path / "x.json"], None)
    with pytest.raises(EdgekitError, match=r"x.json: bench results format None, expected 'edgekit-bench/1'"):
        report.compare([tmp_path / "x.json", tmp_path / "x.json"], None)
    with pytest.raises(EdgekitError, match="no such results file"):
        report.compare([tmp_path / "y.json", tmp_path / "x.json"], None)


# ---------------------------------------------------------------------------------------- bad input


def _damage(path: Path, how: str) -> None:
    if how == "no-eval":
        (path / "eval.npz").unlink()
    elif how == "no-variant":
        (path / "model.int8.onnx").unlink()
    elif how == "corrupt-model":
        (path / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf")
    elif how == "corrupt-json":
        (path / "edgekit.json").write_text('{"format": "edgekit-bundle/1", ')
    elif how == "eval-shape":
        np.savez(path / "eval.npz", x=np.zeros((4, 1, 7, 7), np.float32), y=np.zeros(4, np.int64))
    elif how == "not-a-bundle":
        (path / "edgekit.json").unlink()


@pytest.mark.parametrize(
    "how, message",
    [
        ("no-eval", "missing eval.npz"),
        ("no-variant", "missing model.int8.onnx"),
        ("corrupt-model", "model.onnx: not a valid ONNX model"),
        ("corrupt-json", "edgekit.json: not valid JSON"),
        ("eval-shape", r"x is float32 \(4, 1, 7, 7\), expected float32 \(N, 1, 8, 8\)"),
        ("not-a-bundle", "not an edgekit bundle"),
    ],
)
def test_damaged_bundle_is_one_clear_error(tmp_path, how, message):
    path = random_bundle(tmp_path)
    _damage(path, how)
    with pytest.raises(EdgekitError, match=message):
        bench([path], ["ort-cpu"], 1, [1], tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"runtimes": ["ort-cpux"]}, "unknown runtime 'ort-cpux' \\(did you mean 'ort-cpu'\\?\\)"),
        ({"batches": [1, 0]}, "batch sizes must be ≥ 1, got 0"),
        ({"threads": 0}, "--threads: must be ≥ 1"),
        ({"bundles": ["nowhere"]}, "nowhere: no such bundle folder"),
        ({"bundles": None, "export_root": "empty"}, "empty: no bundles in it"),
        ({"bundles": None, "export_root": "missing"}, "missing: no such folder"),
    ],
)
def test_bad_arguments_are_one_clear_error(tmp_path, kwargs, message):
    path = random_bundle(tmp_path)
    (tmp_path / "empty").mkdir()
    args = {"bundles": [path], "runtimes": ["ort-cpu"], "threads": 1, "batches": [1], **kwargs}
    for key in ("bundles", "export_root"):
        if isinstance(args.get(key), list):
            args[key] = [p if isinstance(p, Path) else tmp_path / p for p in args[key]]
        elif isinstance(args.get(key), str):
            args[key] = tmp_path / args[key]
    with pytest.raises(EdgekitError, match=message):
        bench(out_dir=tmp_path / "out", **args, **FAST)
    assert not (tmp_path / "out").exists()


def test_made_models_are_valid_onnx():
    onnx.checker.check_model(onnx.load_from_string(gemm_model(np.eye(10, 64), np.zeros(10), conv=True)))


def test_results_name_the_gpu_nvidia_smi_reports(monkeypatch):
    import shutil
    import subprocess as sp

    line = "NVIDIA H200, 143771 MiB, 570.86.15, 9.0\n"
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(sp, "run", lambda *a, **k: sp.CompletedProcess(a, 0, stdout=line))
    assert machine._gpus() == [
        {
            "name": "NVIDIA H200",
            "memory.total": "143771 MiB",
            "driver_version": "570.86.15",
            "compute_cap": "9.0",
        }
    ]
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert machine._gpus() == []  # no NVIDIA driver: none reported, nothing fails


@pytest.mark.skipif(shutil.which("edgekit") is None, reason="the edgekit command is not installed")
def test_gpu_check_script_runs_end_to_end_in_its_cpu_smoke_mode(tmp_path):
    """bench/gpu_check.sh itself, on CPU: its report has training and inference rows: nothing failed."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_WHEELS": "none", "GPU_CHECK_OUT": str(tmp_path)}
    committed = {p: p.read_bytes() for p in (repo / "bench").glob("gpu*.*")}
    done = subprocess.run(
        ["bash", str(repo / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    md = (tmp_path / "gpu.md").read_text()
    assert "| edgekit | channels_last | 32 |" in md
    for runtime in ("ort-cpu", "torch-cpu"):
        assert f"| mobilenet_tiny | fp32 | {runtime} |" in md
    assert "| mobilenet_tiny | int8-trt | ort-cpu |" in md  # `quantize --int8 --target trt` ran
    assert "failed" not in md and "could not" not in md and "no training figures" not in md
    assert {p: p.read_bytes() for p in (repo / "bench").glob("gpu*.*")} == committed  # kept


def test_gpu_check_helpers_run_in_quick_cpu_mode_and_write_markdown(tmp_path):
    """bench/gpu_check.sh's Python parts, in their CPU smoke mode: the training table and bench/gpu.md."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    speed = [sys.executable, str(repo / "bench" / "gpu_train_speed.py"), "--device", "cpu", "--quick"]
    done = subprocess.run(
        [*speed, "--out", str(tmp_path / "train.json")], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((tmp_path / "train.json").read_text())
    assert {(r["who"], r["setting"]) for r in train["rows"]} == {
        ("edgekit", "eager"), ("edgekit", "channels_last"), ("bare", "eager"),
    }  # fmt: skip
    assert all(r["images_per_s"] > 0 for r in train["rows"])
    bench([random_bundle(tmp_path)], ["ort-cpu"], 1, [1, 256], tmp_path / "bench", **FAST)
    report = [sys.executable, str(repo / "bench" / "gpu_report.py"), "--train", str(tmp_path / "train.json")]
    args = ["--bench", str(tmp_path / "bench"), "--out", str(tmp_path / "gpu.md")]
    done = subprocess.run([*report, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    md = (tmp_path / "gpu.md").read_text()
    assert "- TensorRT " in md and "cuDNN" in md and "| edgekit | eager | 32 |" in md
    # no GPU figures here: goals 2 and 3 say so instead of met / not met
    assert md.count("**not measured here**") == 2 and "**met**" not in md
