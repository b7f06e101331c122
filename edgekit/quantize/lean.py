"""Lean ONNX files: short names, no doc strings or debug data, default attributes dropped, shared scales.

For a model of a few thousand parameters the container, not the weights, makes most of the file:
onnxruntime's QDQ quantizer names every tensor after its path (`/features/stage0/conv/Conv_output_0_
QuantizeLinear_Output`), stores a zero point per channel, repeats scales and keeps the shape-inference
results. Each pass below removes one kind of overhead; `make_lean` keeps a pass only when onnxruntime runs
the result exactly as before: the same kernels after its graph optimizations (so no QDQ fusion is lost)
and bit-identical outputs. Passes assume a graph without subgraphs (If/Loop), which edgekit never exports.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Attributes whose ONNX default ("if not present, ...") is one value repeated per spatial axis.
SPATIAL_DEFAULTS = {"dilations": 1, "strides": 1, "pads": 0}
SPATIAL_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"}


def _strip(model: onnx.ModelProto) -> None:
    """Doc strings, producer, metadata_props, node names, shape-inference results, unused opsets."""
    del model.metadata_props[:]  # edgekit.json describes every variant; no copy travels in the file
    graph = model.graph
    graph.name = "g"  # the one string onnx.checker requires
    del graph.value_info[:]
    for node in graph.node:
        node.ClearField("name")
        node.ClearField("doc_string")
        del node.metadata_props[:]
    used = {node.domain for node in graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    for field in ("doc_string", "producer_name", "producer_version", "domain"):
        model.ClearField(field)
    _clear_empty_strings(model)


def _clear_empty_strings(message) -> None:
    """Unset every empty string field (doc_string = "" and the like). onnx is proto2: a field set to ""
    is still written, 2 bytes each, on every node, tensor and value; unset it reads back as "" all
    the same. Fields of a oneof (a shape's dim_param) stay: there, which member is set carries meaning."""
    for field, value in message.ListFields():
        repeated = field.label == field.LABEL_REPEATED if hasattr(field, "label") else field.is_repeated
        if field.type == field.TYPE_MESSAGE:
            for child in value if repeated else [value]:
                _clear_empty_strings(child)
        elif field.type == field.TYPE_STRING and not repeated and field.containing_oneof is None:
            if value == "":
                message.ClearField(field.name)


def _defaults(model: onnx.ModelProto) -> None:
    """Attributes equal to their documented default; a Conv's kernel_shape (inferred from its weight)."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for node in model.graph.node:
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "ai.onnx", 1), node.domain)
        except onnx.defs.SchemaError:  # an operator onnx does not define (a runtime's own): keep all
            continue
        kept = [a for a in node.attribute if not _is_default(node.op_type, a, schema)]
        del node.attribute[:]
        node.attribute.extend(kept)


def _is_default(op_type: str, attribute: onnx.AttributeProto, schema: onnx.defs.OpSchema) -> bool:
    if op_type == "Conv" and attribute.name == "kernel_shape":
        return True
    if op_type in SPATIAL_OPS and attribute.name in SPATIAL_DEFAULTS:
        return all(v == SPATIAL_DEFAULTS[attribute.name] for v in attribute.ints)
    default = schema.attributes[attribute.name].default_value if attribute.name in schema.attributes else None
    if default is None or default.type == onnx.AttributeProto.UNDEFINED:
        return False
    return helper.get_attribute_value(default) == helper.get_attribute_value(attribute)


def _ceil_mode(model: onnx.ModelProto) -> None:
    """ceil_mode=1 on a pool whose windows tile its input exactly (8 → 4 → 2): rounding up or down gives
    the same output shape, so the attribute takes its default. Needs the input's spatial sizes."""
    shapes = _shapes(model)
    for node in model.graph.node:
        if node.op_type not in SPATIAL_OPS or not node.input or node.input[0] not in shapes:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("ceil_mode") != 1 or "kernel_shape" not in attrs:
            continue
        spatial, kernel = shapes[node.input[0]][2:], attrs["kernel_shape"]
        strides = attrs.get("strides", [1] * len(kernel))
        pads = attrs.get("pads", [0] * 2 * len(kernel))
        dilations = attrs.get("dilations", [1] * len(kernel))
        if len(spatial) != len(kernel) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        exact = all(
            (size + pads[i] + pads[i + len(kernel)] - ((kernel[i] - 1) * dilations[i] + 1)) % strides[i] == 0
            for i, size in enumerate(spatial)
        )
        if exact:
            kept = [a for a in node.attribute if a.name != "ceil_mode"]
            del node.attribute[:]
            node.attribute.extend(kept)


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Each tensor's shape where every dimension but the batch is known (shape inference on a copy)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph, shapes = inferred.graph, {}
    for value in [*graph.input, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 2 and all(d.HasField("dim_value") for d in dims[1:]):
            shapes[value.name] = [0, *(d.dim_value for d in dims[1:])]
    return shapes


def _zero_points(model: onnx.ModelProto) -> None:
    """All-zero zero points of weight DequantizeLinear nodes that feed convolutions (0 is the default).

    Only for Conv: onnxruntime stops fusing a Gemm into QGemm without its weight zero point (measured).
    """
    inits, consumers = _initializers(model), _consumers(model)
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) != 3 or node.input[0] not in inits:
            continue
        if node.input[2] in inits and not numpy_helper.to_array(inits[node.input[2]]).any():
            if all(c.op_type == "Conv" for c in consumers[node.output[0]]):
                del node.input[2]


def _requantized(model: onnx.ModelProto) -> None:
    """A QuantizeLinear → DequantizeLinear pair after a MaxPool whose input comes from a DequantizeLinear
    with the same scale and zero point: max commutes with dequantization, so the pair is exactly the
    identity, and onnxruntime re-derives it when it fuses the graph (measured; after a Flatten feeding a
    Gemm it does not, so only MaxPool)."""
    producers, consumers = {o: n for n in model.graph.node for o in n.output}, _consumers(model)
    dropped, rename = set(), {}
    for q in model.graph.node:
        pool = producers.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        before = producers.get(pool.input[0]) if pool is not None and pool.op_type == "MaxPool" else None
        after = consumers[q.output[0]]
        if before is None or before.op_type != "DequantizeLinear" or len(consumers[q.input[0]]) != 1:
            continue
        if (
            len(after) != 1
            or after[0].op_type != "DequantizeLinear"
            or list(q.input[1:]) != list(before.input[1:])
        ):
            continue
        dropped |= {id(q), id(after[0])}
        rename[after[0].output[0]] = q.input[0]
    kept = [n for n in model.graph.node if id(n) not in dropped]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _shared(model: onnx.ModelProto) -> None:
    """Initializers with the same type, shape and bytes (scales, zero points) stored once."""
    first: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    for tensor in model.graph.initializer:
        key = (tensor.data_type, tuple(tensor.dims), numpy_helper.to_array(tensor).tobytes())
        alias[tensor.name] = first.setdefault(key, tensor.name)
    for node in model.graph.node:
        node.input[:] = [alias.get(name, name) for name in node.input]


def _names(model: onnx.ModelProto) -> None:
    """Every tensor but the model's input and output renamed to a short base-36 counter."""
    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep or not name:
            return name
        while name not in names:
            candidate = np.base_repr(len(names), 36).lower()
            names[name] = candidate if candidate not in keep else f"_{candidate}"
        return names[name]

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


PASSES: tuple[Callable[[onnx.ModelProto], None], ...] = (
    _strip,
    _defaults,
    _ceil_mode,
    _zero_points,
    _requantized,
    _shared,
    _names,
)


def make_lean(model: onnx.ModelProto, x: np.ndarray, work: Path) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with every pass applied that keeps onnxruntime's kernels and outputs on `x` unchanged.

    Returns the lean model and the names of the passes kept. `work` is a folder for scratch files.
    """
    if any(a.HasField("g") or a.graphs for n in model.graph.node for a in n.attribute):
        return model, []
    _sort(model)  # the fp16 converter appends its output Casts last; onnx.checker wants data-flow order
    if not _valid(model):
        return model, []  # e.g. operators of a domain onnx does not know: leave the model as it is
    before = _runs_as(model, x, work)
    kept = []
    for lean_pass in PASSES:
        candidate = onnx.ModelProto()
        candidate.CopyFrom(model)
        lean_pass(candidate)
        _drop_unused(candidate)
        if candidate != model and _valid(candidate) and _same(_runs_as(candidate, x, work), before):
            model = candidate
            kept.append(lean_pass.__name__.lstrip("_").replace("_", "-"))
    return model, kept


def _sort(model: onnx.ModelProto) -> None:
    """Nodes in data-flow (topological) order, otherwise in their current order (Kahn's algorithm)."""
    graph = model.graph
    ready = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [n for n in pending if all(name in ready for name in n.input)]
        if not runnable:
            return  # a cycle or a dangling input: leave it for the checker to name
        for node in runnable:
            ready.update(node.output)
        ordered += runnable
        pending = [n for n in pending if all(n is not r for r in runnable)]
    del graph.node[:]
    graph.node.extend(ordered)


def _valid(model: onnx.ModelProto) -> bool:
    """What `edgekit.bundle.read_bundle` will ask of the file: onnx.checker passes."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        return False
    return True


def _runs_as(model: onnx.ModelProto, x: np.ndarray, work: Path) -> tuple[collections.Counter, np.ndarray]:
    """The kernels onnxruntime runs after its graph optimizations, and its output for `x`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    options.optimized_model_filepath = str(work / "optimized.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.float16 if feed.type == "tensor(float16)" else np.float32
    out = session.run(None, {feed.name: x.astype(dtype)})[0]
    optimized = onnx.load(str(work / "optimized.onnx"))
    return collections.Counter((n.domain, n.op_type) for n in optimized.graph.node), out


def _same(a: tuple[collections.Counter, np.ndarray], b: tuple[collections.Counter, np.ndarray]) -> bool:
    return a[0] == b[0] and a[1].shape == b[1].shape and np.array_equal(a[1], b[1])


def _drop_unused(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    found = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            found[name].append(node)
    return found
