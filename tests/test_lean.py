"""edgekit.quantize.lean: passes that shrink an ONNX file without changing what onnxruntime computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgekit.quantize.lean import make_lean


def pools(size: int) -> onnx.ModelProto:
    """Two 2×2/2 MaxPools with ceil_mode=1 on a 1×size×size input, every doc string set to ""."""
    nodes = [
        helper.make_node(
            "MaxPool", [a], [b], name=f"pool{i}", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1
        )
        for i, (a, b) in enumerate((("input", "p"), ("p", "logits")))
    ]
    for node in nodes:
        node.doc_string = ""
    graph = helper.make_graph(
        nodes,
        "pools",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, None, None])],
        doc_string="",
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], doc_string="")
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def empty_strings_set(message) -> list[str]:
    """Names of singular string fields that are set (so written to the file) but empty, at any depth."""
    found = []
    for field, value in message.ListFields():
        repeated = field.label == field.LABEL_REPEATED if hasattr(field, "label") else field.is_repeated
        if field.type == field.TYPE_MESSAGE:
            for child in value if repeated else [value]:
                found += empty_strings_set(child)
        elif field.type == field.TYPE_STRING and not repeated and value == "":
            found.append(f"{type(message).__name__}.{field.name}")
    return found


def test_strip_unsets_empty_strings_which_proto2_would_still_write(tmp_path):
    model = pools(8)
    assert "NodeProto.doc_string" in empty_strings_set(model)  # the fixture does set them
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    lean, kept = make_lean(model, x, tmp_path)
    assert "strip" in kept
    assert empty_strings_set(lean) == []
    assert not any(node.name for node in lean.graph.node)
    assert len(lean.SerializeToString()) < len(model.SerializeToString())
    np.testing.assert_array_equal(run(lean, x), run(model, x))


def test_ceil_mode_is_dropped_only_where_pool_windows_tile_the_input(tmp_path):
    rng = np.random.default_rng(1)
    # 8 → 4 → 2 whichever way pools round; 7 → 4 only rounding up (3 down), then 4 → 2 either way
    for size, still_ceil in ((8, []), (7, [0])):  # the positions of the pools that keep ceil_mode
        model = pools(size)
        x = rng.standard_normal((2, 1, size, size)).astype(np.float32)
        lean, kept = make_lean(model, x, tmp_path)
        ceil = [i for i, n in enumerate(lean.graph.node) if any(a.name == "ceil_mode" for a in n.attribute)]
        assert "ceil-mode" in kept and ceil == still_ceil
        np.testing.assert_array_equal(run(lean, x), run(model, x))
