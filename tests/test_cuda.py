"""The GPU paths, checked on a GPU: AMP (bf16 and fp16 + GradScaler), channels_last, torch.compile, resume,
onnxruntime CUDA and TensorRT bench rows, `quantize --target trt` built by TensorRT, a 1-process NCCL DDP run.

Every test here is marked `cuda` and skipped where torch sees no GPU (tests/conftest.py);
`bench/gpu_check.sh` installs the GPU set and runs them with `pytest -m cuda`.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from rich.console import Console  # noqa: E402

from edgekit.bench.run import bench  # noqa: E402
from edgekit.bundle import load_eval  # noqa: E402
from edgekit.data import prepare_for  # noqa: E402
from edgekit.export.write import export_run  # noqa: E402
from edgekit.ort_providers import CUDA, TRT  # noqa: E402
from edgekit.quantize.quantize import quantize_bundle  # noqa: E402
from edgekit.recipe import load  # noqa: E402
from edgekit.runs import load_checkpoint  # noqa: E402
from edgekit.train import loop, run  # noqa: E402
from edgekit.train.track import Silent  # noqa: E402

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parent.parent
RECIPE = {
    "model": {"arch": "lenet", "channels": [8, 16]},
    "train": {"epochs": 3, "batch_size": 64, "device": "cuda"},
    "track": {"wandb": "disabled"},
}


def recipe_file(tmp_path: Path, **train) -> Path:
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "train": {**RECIPE["train"], **train}}))
    return path


def trained(tmp_path: Path, overrides: list[str] = ()) -> loop.State:
    """A State built from the recipe and fitted to the end, without a run folder's summary."""
    recipe = load(recipe_file(tmp_path), list(overrides))
    state = run.build_state(recipe, prepare_for(recipe))
    (tmp_path / "run").mkdir(exist_ok=True)
    loop.fit(state, tmp_path / "run", Silent())
    return state


@pytest.mark.parametrize(
    ("capability", "dtype", "scaled"),
    [((9, 0), torch.bfloat16, False), ((7, 5), torch.float16, True)],  # Hopper and Turing choices
)
def test_amp_paths_train(tmp_path, monkeypatch, capability, dtype, scaled):
    # The capability is pretended so that both branches run on this GPU (bf16 and fp16 both exist here).
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    state = trained(tmp_path)
    assert state.device.type == "cuda" and state.amp_dtype == dtype
    assert (state.scaler is not None) == scaled
    if scaled:
        assert state.scaler.get_scale() > 0  # updated every step, never collapsed to 0 by inf gradients
    val = loop.evaluate(state, state.val)
    assert val["acc"] > 0.6 and np.isfinite(val["loss"])


def test_channels_last_trains_and_matches_the_default_layout(tmp_path):
    state = trained(tmp_path, ["train.channels_last=true", "train.epochs=1"])
    assert state.channels_last
    conv = [p for p in state.model.parameters() if p.ndim == 4]
    assert conv and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
    x = next(iter(state.val))[0]  # a normalized val batch, on the GPU
    model = state.model.eval()
    with torch.no_grad():
        a = model(x.contiguous(memory_format=torch.channels_last)).float()
        b = model(x.contiguous()).float()
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_compile_trains(tmp_path):
    state = trained(tmp_path, ["train.compile=true", "train.epochs=2"])
    assert isinstance(state.net, torch._dynamo.eval_frame.OptimizedModule)
    assert loop.evaluate(state, state.val)["acc"] > 0.5


class Killed(Exception):
    pass


def test_resume_matches_a_straight_run_within_tolerance(tmp_path, monkeypatch):
    """A run killed in epoch 2 and resumed ends where an uninterrupted one does. Bit-for-bit holds on CPU
    only: cuDNN picks nondeterministic kernels (atomics in the backward), so here within tolerance."""
    from edgekit.train.track import Tracker

    console = Console(file=io.StringIO())
    path = recipe_file(tmp_path, epochs=2, amp=False)
    straight = run.start(path, [], tmp_path / "a", console)
    original = Tracker.log

    def killed_in_epoch_2(self, row):
        if row["epoch"] == 2:
            raise Killed  # last.pt holds epoch 1
        original(self, row)

    monkeypatch.setattr(Tracker, "log", killed_in_epoch_2)
    with pytest.raises(Killed):
        run.start(path, [], tmp_path / "b", console)
    monkeypatch.setattr(Tracker, "log", original)
    resumed = run.resume(next((tmp_path / "b").iterdir()), [], console)
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key].float(), value.float(), rtol=1e-2, atol=1e-2)
    sa = json.loads((straight / "summary.json").read_text())
    sb = json.loads((resumed / "summary.json").read_text())
    assert abs(sa["val_acc"] - sb["val_acc"]) <= 0.02


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A CUDA-trained lenet, exported, with fp16 and TensorRT int8 variants."""
    root = tmp_path_factory.mktemp("cuda_bundle")
    console = Console(file=io.StringIO())
    run_dir = run.start(recipe_file(root, epochs=5), [], root / "runs", console)
    path = export_run(run_dir, root / "export")
    quantize_bundle(path, "fp16", timing_repeat=1)
    quantize_bundle(path, "int8", target="trt", timing_repeat=1)
    return path


def needs_provider(provider: str) -> None:
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"onnxruntime has no {provider} (install onnxruntime-gpu)")


def test_ort_cuda_bench_rows(bundle, tmp_path):
    needs_provider(CUDA)
    results = bench([bundle], ["ort-cpu", "ort-cuda"], None, [1, 256], tmp_path / "out")
    rows = {(r["runtime"], r["variant"]): r for r in results["rows"]}
    cuda = rows[("ort-cuda", "fp32")]
    assert cuda["device"] == CUDA and cuda["throughput"]["256"] > 0
    assert abs(cuda["accuracy"] - rows[("ort-cpu", "fp32")]["accuracy"]) <= 0.005


def tensorrt_ready() -> None:
    needs_provider(TRT)
    pytest.importorskip("tensorrt", reason="the tensorrt wheels are not installed")


def test_ort_trt_bench_rows_fp32_fp16_int8(bundle, tmp_path):
    tensorrt_ready()
    results = bench([bundle], ["ort-cpu", "ort-trt"], None, [1, 256], tmp_path / "out")
    rows = {(r["runtime"], r["variant"]): r for r in results["rows"]}
    assert not [s for s in results["skipped"] if s["runtime"] == "ort-trt"], results["skipped"]
    for variant in ("fp32", "fp16", "int8-trt"):
        row = rows[("ort-trt", variant)]
        assert row["device"] == TRT and row["throughput"]["256"] > 0
        assert abs(row["accuracy"] - rows[("ort-cpu", "fp32")]["accuracy"]) <= 0.01, variant


def test_quantize_target_trt_builds_in_tensorrt(bundle, tmp_path, monkeypatch):
    tensorrt_ready()
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    from edgekit.bench.run import read_bundle
    from edgekit.runtimes import runtime

    rt, target = runtime("ort-trt"), read_bundle(bundle)
    session = rt.load(target, "int8-trt", threads=None)
    assert session.providers[0] == TRT
    x, y = load_eval(bundle)
    for batch in (1, 256):  # both ends of the shape profile's tuned range, one engine
        logits = rt.run(session, np.resize(x, (batch, *x.shape[1:])).astype(np.float32))
        assert logits.shape == (batch, len(target.meta.class_names)) and np.isfinite(logits).all()
    assert any((tmp_path / "tensorrt").iterdir())  # the engine was cached for the next session
    cpu = runtime("ort-cpu")
    want = cpu.run(cpu.load(target, "int8-trt", None), x).argmax(1)
    got = np.concatenate([rt.run(session, x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    assert abs((got == y).mean() - (want == y).mean()) <= 0.005  # the goal's 0.5 point


NCCL_WORKER = """
import sys
from pathlib import Path
import torch, torch.distributed as dist
from edgekit.data import prepare_for
from edgekit.recipe import load
from edgekit.train import loop, run
from edgekit.train.track import Silent

recipe = load(sys.argv[1], ["train.sync_bn=true", "train.epochs=2"])
state = run.build_state(recipe, prepare_for(recipe))
assert dist.is_initialized() and dist.get_backend() == "nccl" and dist.get_world_size() == 1
assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in state.model.modules())
assert isinstance(state.net, torch.nn.parallel.DistributedDataParallel)
out = Path(sys.argv[2])
out.mkdir()
print("stop:", loop.fit(state, out, Silent()), "val_acc:", loop.evaluate(state, state.val)["acc"])
dist.destroy_process_group()
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_one_process_nccl_ddp_with_sync_bn(tmp_path):
    (tmp_path / "worker.py").write_text(NCCL_WORKER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    done = subprocess.run(
        [*launcher, str(tmp_path / "worker.py"), str(recipe_file(tmp_path)), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("stop:"))
    assert "finished" in line and float(line.split()[-1]) > 0.5
    assert (tmp_path / "run" / "best.pt").is_file()
