"""The bundle format without torch: write/read round trip, never overwriting, every bad bundle's error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.bundle import add_variant, load_eval, new_bundle_dir, read_bundle, write_bundle
from edgekit.bundle_meta import (
    FORMAT,
    Accuracy,
    BundleMeta,
    EvalSet,
    InputSpec,
    OutputSpec,
    Parity,
    Source,
    Variant,
    Versions,
)
from edgekit.errors import EdgekitError

C, H, CLASSES = 1, 4, 3


def tiny_onnx() -> bytes:
    """Flatten → Gemm on 1×4×4 inputs, built with onnx.helper (no torch)."""
    w = numpy_helper.from_array(np.ones((CLASSES, C * H * H), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", C, H, H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def meta(name: str = "tiny", images: int = 5) -> BundleMeta:
    return BundleMeta(
        name=name,
        class_names=["a", "b", "c"],
        input=InputSpec(shape=["batch", C, H, H], mean=[0.5], std=[0.25], image_size=H),
        output=OutputSpec(shape=["batch", CLASSES]),
        params=48,
        macs=48,
        accuracy=Accuracy(val=0.9, test=0.8),
        recipe={"model": {"arch": "lenet"}},
        versions=Versions(edgekit="0", torch="0", onnx="0", onnxruntime="0", opset=18),
        source=Source(run="runs/tiny", checkpoint="runs/tiny/best.pt", epoch=1),
        parity=Parity(max_abs_diff=0.0, top1_agreement=1.0, images=images, atol=1e-4),
        eval=EvalSet(images=images),
        variants={"fp32": Variant(file="model.onnx", bytes=0, dtype="float32")},
    )


def arrays(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, C, H, H), np.float32), np.arange(n, dtype=np.int64) % CLASSES


def write(out: Path, name: str = "tiny", force: bool = False, n: int = 5) -> Path:
    return write_bundle(out, meta(name, n), tiny_onnx(), *arrays(n), force=force)


def test_round_trip(tmp_path):
    path = write(tmp_path)
    assert path == tmp_path / "tiny"
    assert sorted(p.name for p in path.iterdir()) == ["edgekit.json", "eval.npz", "model.onnx"]
    got, paths = read_bundle(path)
    assert got.format == FORMAT and got.class_names == ["a", "b", "c"]
    assert got.variants["fp32"].bytes == (path / "model.onnx").stat().st_size
    assert paths.model == path / "model.onnx" and paths.eval == path / "eval.npz"
    x, y = load_eval(path)
    assert x.dtype == np.float32 and x.shape == (5, C, H, H) and y.dtype == np.int64 and len(y) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_never_overwrites_and_force_replaces(tmp_path):
    first, second = write(tmp_path), write(tmp_path)
    assert (first.name, second.name) == ("tiny", "tiny-2")
    assert new_bundle_dir(tmp_path, "tiny") == tmp_path / "tiny-3"
    replaced = write(tmp_path, force=True, n=7)
    assert replaced == first and read_bundle(replaced)[0].eval.images == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny", "tiny-2"]


def test_failed_write_leaves_old_bundle_and_no_debris(tmp_path):
    old = write(tmp_path)
    before = (old / "edgekit.json").read_text()
    x, y = arrays()
    bad_x = np.zeros((5, C, H + 1, H), np.float32)  # does not match input.shape: the self-check fails
    for force in (False, True):
        with pytest.raises(EdgekitError, match="eval.npz"):
            write_bundle(tmp_path, meta(), tiny_onnx(), bad_x, y, force=force)
    assert (old / "edgekit.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_add_variant(tmp_path):
    path = write(tmp_path)
    (path / "model.int8.onnx").write_bytes(tiny_onnx())
    add_variant(path, "int8", Variant(file="model.int8.onnx", bytes=0, dtype="int8", method="dynamic"))
    got, paths = read_bundle(path)
    assert list(got.variants) == ["fp32", "int8"] and got.variants["int8"].method == "dynamic"
    assert got.variants["int8"].bytes == (path / "model.int8.onnx").stat().st_size
    assert paths.variants["int8"] == path / "model.int8.onnx"
    with pytest.raises(EdgekitError, match="no such file"):
        add_variant(path, "fp16", Variant(file="model.fp16.onnx", bytes=0, dtype="float16"))


def _edit_json(path: Path, change) -> None:
    data = json.loads((path / "edgekit.json").read_text())
    change(data)
    (path / "edgekit.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "edgekit.json").unlink(), "no edgekit.json"),
        (lambda p: (p / "model.onnx").unlink(), "missing model.onnx"),
        (lambda p: (p / "eval.npz").unlink(), "missing eval.npz"),
        (lambda p: (p / "edgekit.json").write_text("{not json"), "not valid JSON"),
        (lambda p: _edit_json(p, lambda d: d.update(format="other/9")), "format 'other/9'"),
        (lambda p: _edit_json(p, lambda d: d.pop("class_names")), "class_names: Field required"),
        (lambda p: _edit_json(p, lambda d: d["variants"].pop("fp32")), "no 'fp32'"),
        (
            lambda p: _edit_json(p, lambda d: d["input"].pop("mean")),
            r"input.mean: Field required; the preprocessing is incomplete: re-export it",
        ),
        (lambda p: (p / "model.onnx").write_bytes(b"\x08\x07garbage" * 10), "not a valid ONNX model"),
        (lambda p: (p / "model.onnx").write_bytes(tiny_onnx()[:40]), "not a valid ONNX model"),
    ],
)
def test_bad_bundles(tmp_path, damage, message):
    path = write(tmp_path)
    damage(path)
    with pytest.raises(EdgekitError, match=message):
        read_bundle(path)


def test_missing_folder(tmp_path):
    with pytest.raises(EdgekitError, match="no such bundle folder"):
        read_bundle(tmp_path / "nope")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "eval.npz").write_bytes(b"PK\x03\x04 broken zip"), "not a readable eval set"),
        (lambda p: np.savez(p / "eval.npz", x=np.zeros((5, C, H, H), np.float32)), "not a readable eval set"),
        (
            lambda p: np.savez(p / "eval.npz", **_arrays(x=np.zeros((5, 3, H, H), np.float32))),
            r"\(N, 1, 4, 4\)",
        ),
        (lambda p: np.savez(p / "eval.npz", **_arrays(x=np.zeros((5, C, H, H), np.float64))), "float64"),
        (lambda p: np.savez(p / "eval.npz", **_arrays(y=np.zeros(4, np.int64))), "expected int64 \\(5,\\)"),
        (lambda p: np.savez(p / "eval.npz", **_arrays(n=6)), "eval.images says 5"),
    ],
)
def test_bad_eval_sets(tmp_path, damage, message):
    path = write(tmp_path)
    damage(path)
    with pytest.raises(EdgekitError, match=message):
        load_eval(path)


def _arrays(n: int = 5, **replace) -> dict[str, np.ndarray]:
    x, y = arrays(n)
    return {"x": x, "y": y, **replace}


def test_bundle_reads_without_torch(tmp_path):
    path = write(tmp_path)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from edgekit.bundle import read_bundle, load_eval\n"
        f"meta, _ = read_bundle({str(path)!r}); x, y = load_eval({str(path)!r})\n"
        "print(meta.name, x.shape)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "tiny"
