"""`edgekit export --onnx` on runs trained here: every family, parity, BN folding, size, batch, bundles."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_MOBILENET, train_tiny_runs
from rich.console import Console

from edgekit.bundle import load_eval, load_val, read_bundle
from edgekit.data import prepare
from edgekit.errors import EdgekitError
from edgekit.export import onnx as to
from edgekit.export import parity
from edgekit.export.write import export_run
from edgekit.models import build_model, count_params
from edgekit.runs import load_checkpoint, save_checkpoint

TEST_IMAGES = 270  # digits' test split at test_fraction 0.15
MODELS = {
    # lenet_2k's model: 1,922 parameters, with BatchNorm after each conv.
    "lenet": {"arch": "lenet", "channels": [8, 16], "norm": "batch"},
    "lenet_dw": {"arch": "lenet", "channels": [8, 16], "conv": "dwsep"},
    "resnet": {"arch": "resnet_small", "stem_channels": 8, "channels": [8, 12], "blocks": 1},
    "mobilenet": TINY_MOBILENET,
}


def quiet() -> Console:
    return Console(file=io.StringIO())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run per model, trained for one epoch (shared: exporting never writes into a run)."""
    return train_tiny_runs(tmp_path_factory, "runs", {name: (model, 1) for name, model in MODELS.items()})


def copy_run(src: Path, runs_dir: Path, name: str | None = None) -> Path:
    dest = runs_dir / (name or src.name)
    shutil.copytree(src, dest)
    return dest


def torch_model(run_dir: Path) -> torch.nn.Module:
    ckpt = load_checkpoint(run_dir / "best.pt")
    model = build_model(*[ckpt[k] for k in ("arch", "options", "in_channels", "num_classes", "image_size")])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("name", list(MODELS))
def test_export_each_family(runs, tmp_path, name):
    bundle = export_run(runs[name], tmp_path / "export", console=quiet())
    assert bundle == tmp_path / "export" / name
    files = ["calib.npz", "edgekit.json", "eval.npz", "model.onnx", "val.npz"]
    assert sorted(p.name for p in bundle.iterdir()) == files  # no .data
    meta, paths = read_bundle(bundle)
    val_x, val_y = load_val(bundle)  # the run's val split, for choices; eval.npz is the test split
    assert meta.val.split == "val" and len(val_y) == meta.val.images == 270 and val_x.shape[1:] == (1, 8, 8)
    assert meta.parity.max_abs_diff <= 1e-4 and meta.parity.top1_agreement == 1.0
    assert meta.parity.images == TEST_IMAGES  # the whole validation split
    assert "BatchNormalization" not in ops(paths.model)
    proto = onnx.load(str(paths.model))
    onnx.checker.check_model(proto, full_check=True)
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)
    # Dynamic batch: any batch size runs and matches torch.
    sess = ort.InferenceSession(str(paths.model), providers=["CPUExecutionProvider"])
    x, _ = load_eval(bundle)
    model = torch_model(runs[name])
    for n in (1, 7):
        got = sess.run(None, {"input": x[:n]})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, model(torch.from_numpy(x[:n])).numpy(), atol=1e-4)


def test_lenet_2k_file_is_small_and_self_contained(runs, tmp_path):
    assert count_params(torch_model(runs["lenet"])) == 1922
    bundle = export_run(runs["lenet"], tmp_path, console=quiet())
    size = (bundle / "model.onnx").stat().st_size
    assert size < 20_000  # 1,922 float32 weights are 7.7 kB; no debug metadata, no external data
    assert not list(tmp_path.rglob("*.data"))
    proto = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_metadata_and_eval_set(runs, tmp_path):
    bundle = export_run(runs["lenet"], tmp_path, console=quiet())
    meta, paths = read_bundle(bundle)
    ckpt = load_checkpoint(runs["lenet"] / "best.pt")
    summary = json.loads((runs["lenet"] / "summary.json").read_text())
    assert meta.name == "lenet" and meta.class_names == [str(i) for i in range(10)]
    assert meta.input.shape == ["batch", 1, 8, 8] and meta.input.mean == ckpt["mean"]
    assert meta.params == 1922 and meta.macs == ckpt["macs"]
    assert meta.accuracy.test == summary["test_acc"] and meta.accuracy.val == summary["val_acc"]
    assert meta.versions.opset == 18 and meta.versions.torch == torch.__version__
    assert meta.source.epoch == ckpt["epoch"] and meta.source.checkpoint.endswith("best.pt")
    assert meta.recipe["model"]["channels"] == [8, 16]
    assert meta.variants["fp32"].bytes == paths.model.stat().st_size
    # The model file carries the metadata too (without the recipe).
    props = {p.key: p.value for p in onnx.load(str(paths.model)).metadata_props}
    embedded = json.loads(props["edgekit"])
    assert embedded["name"] == "lenet" and embedded["input"]["shape"] == ["batch", 1, 8, 8]
    assert "recipe" not in embedded
    # eval.npz: the whole test split, preprocessed exactly as training evaluated it.
    x, y = load_eval(bundle)
    test_labels = prepare("digits", {}, None, 0.15, 0.15).test[1]
    assert meta.eval.images == len(y) == len(test_labels) == TEST_IMAGES and not meta.eval.sampled
    assert x.dtype == np.float32 and y.dtype == np.int64 and np.array_equal(y, test_labels.numpy())
    assert abs(float(x.mean())) < 0.5  # normalized, not 0..255
    assert meta.variants["fp32"].accuracy == pytest.approx(summary["test_acc"], abs=1.5 / TEST_IMAGES)


def test_fixed_batch_and_opset(runs, tmp_path):
    bundle = export_run(runs["mobilenet"], tmp_path, opset=17, batch="4", console=quiet())
    meta, paths = read_bundle(bundle)
    proto = onnx.load(str(paths.model))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [4, 1, 8, 8]
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17 == meta.versions.opset
    assert meta.input.shape[0] == 4 and meta.output.shape == [4, 10]
    assert meta.parity.images == TEST_IMAGES and meta.parity.top1_agreement == 1.0  # last batch padded
    sess = ort.InferenceSession(str(paths.model), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": load_eval(bundle)[0][:4]})[0].shape == (4, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"batch": "0"}, "--batch '0'"), ({"batch": "big"}, "dynamic"), ({"opset": 99}, "--opset 99")],
)
def test_bad_options(runs, tmp_path, kwargs, message):
    with pytest.raises(EdgekitError, match=message):
        export_run(runs["lenet"], tmp_path, **kwargs)
    assert not tmp_path.joinpath("lenet").exists()


def test_newest_run_is_the_default(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy_run(runs["lenet"], Path("runs"))
    newer = copy_run(runs["resnet"], Path("runs"))
    os.utime(newer / "last.pt")  # copies keep mtimes: make this one the newest
    assert export_run(None) == Path("export") / "resnet"
    assert (tmp_path / "export" / "resnet" / "model.onnx").is_file()


def test_never_overwrites_force_replaces(runs, tmp_path):
    first = export_run(runs["lenet"], tmp_path)
    second = export_run(runs["lenet"], tmp_path)
    assert (first.name, second.name) == ("lenet", "lenet-2")
    replaced = export_run(runs["lenet"], tmp_path, opset=17, force=True)
    assert replaced == first and read_bundle(first)[0].versions.opset == 17
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "lenet-2"]  # no temporary folders


def test_parity_failure_says_by_how_much(runs):
    model = torch_model(runs["lenet"])
    sess = parity.session(to.to_onnx(model, (1, 8, 8), 18, None).SerializeToString())
    x, _ = load_eval_from_run(runs["lenet"])
    assert parity.check_parity(model, sess, x)["max_abs_diff"] <= 1e-4
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head.fc.bias += 0.01
    with pytest.raises(EdgekitError, match=r"max \|logit difference\| 0\.01 \(allowed 0\.0001\)"):
        parity.check_parity(changed, sess, x)


def load_eval_from_run(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    ckpt = load_checkpoint(run_dir / "best.pt")
    images, labels = prepare("digits", {}, None, 0.15, 0.15).val
    x = (images.float() / 255 - torch.tensor(ckpt["mean"]).view(1, -1, 1, 1)) / torch.tensor(
        ckpt["std"]
    ).view(1, -1, 1, 1)
    return x.numpy(), labels.numpy()


def test_failed_export_writes_nothing_and_keeps_old_bundle(runs, tmp_path, monkeypatch):
    old = export_run(runs["lenet"], tmp_path)
    before = (old / "model.onnx").read_bytes()
    original = to.to_onnx

    def drifted(model, *args):  # an exporter that got the weights slightly wrong
        model = copy.deepcopy(model)
        with torch.no_grad():
            model.head.fc.bias += 0.01
        return original(model, *args)

    monkeypatch.setattr(to, "to_onnx", drifted)
    for force in (False, True):
        with pytest.raises(EdgekitError, match="parity check failed"):
            export_run(runs["lenet"], tmp_path, force=force)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet"]
    assert (old / "model.onnx").read_bytes() == before


def test_torchvision_resnet18(runs, tmp_path):
    """A torchvision model (Conv/BN as attributes, not Sequential pairs): the exporter folds its BNs."""
    run_dir = copy_run(runs["lenet"], tmp_path / "runs", "resnet18")
    ckpt = load_checkpoint(run_dir / "best.pt")
    torch.manual_seed(0)
    model = build_model("torchvision", {"name": "resnet18"}, 1, 10, 8).eval()
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ckpt.pop("format")
    ckpt.update(arch="torchvision", options=model.spec.options, model=model.state_dict())
    ckpt["params"] = count_params(model)
    ckpt["recipe"]["model"] = {"arch": "torchvision", "name": "resnet18"}
    save_checkpoint(run_dir / "best.pt", ckpt)
    meta, paths = read_bundle(export_run(run_dir, tmp_path / "export"))
    assert meta.parity.top1_agreement == 1.0 and meta.parity.max_abs_diff <= 1e-4
    assert "BatchNormalization" not in ops(paths.model)


def test_fold_batchnorm_matches_and_removes_bn(runs):
    model = torch_model(runs["resnet"])
    folded = to.fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_run_without_best_checkpoint(runs, tmp_path):
    run_dir = copy_run(runs["lenet"], tmp_path / "runs")
    (run_dir / "best.pt").unlink()
    with pytest.raises(EdgekitError, match="no best.pt"):
        export_run(run_dir, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_checkpoint_of_another_format(runs, tmp_path):
    run_dir = copy_run(runs["lenet"], tmp_path / "runs")
    torch.save({"format": "someone-else/3", "model": {}}, run_dir / "best.pt")
    with pytest.raises(EdgekitError, match="checkpoint format 'someone-else/3'"):
        export_run(run_dir, tmp_path / "export")


def test_not_a_run(tmp_path, monkeypatch):
    with pytest.raises(EdgekitError, match="no such run folder"):
        export_run(tmp_path / "nope", tmp_path / "export")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgekitError, match="no runs found"):
        export_run(None)


def test_damaged_exported_bundle(runs, tmp_path):
    bundle = export_run(runs["lenet"], tmp_path)
    x, y = load_eval(bundle)
    np.savez(bundle / "eval.npz", x=x[:, :, :4], y=y)
    with pytest.raises(EdgekitError, match=r"expected float32 \(N, 1, 8, 8\)"):
        load_eval(bundle)
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgekitError, match="not a valid ONNX model"):
        read_bundle(bundle)
