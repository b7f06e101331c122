"""torch → ONNX: BatchNorm folding, torch.onnx export, onnxslim, debug stripping, checker, metadata."""

from __future__ import annotations

import copy
import io
import json
import warnings
from typing import Any

import onnx
import torch
from torch import nn

from edgekit.errors import EdgekitError

INPUT, OUTPUT = "input", "logits"
# The TorchScript exporter (used below) writes opsets up to 20; below 11 lacks ops these models use.
OPSETS = range(11, 21)


def parse_batch(batch: str | int) -> int | None:
    """`--batch dynamic` → None (any batch size); `--batch N` → N."""
    text = str(batch).strip().lower()
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise EdgekitError(f"--batch {batch!r}: expected 'dynamic' or a batch size ≥ 1, e.g. --batch 1")


def check_opset(opset: int) -> int:
    if opset not in OPSETS:
        raise EdgekitError(f"--opset {opset}: expected {OPSETS.start}..{OPSETS.stop - 1} (default 18)")
    return opset


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with each BatchNorm2d that directly follows a conv folded into it.

    Only pairs inside an nn.Sequential are folded, where child order is data flow; the conv may be the
    last layer of a nested Sequential (a depthwise-separable conv). The folded BN becomes Identity, so
    the exported graph and its initializer names follow the model's own layers. The TorchScript
    exporter's eval peephole folds Conv+BN pairs this misses (e.g. torchvision's conv1/bn1 attributes).
    """
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for before, name in zip(names, names[1:], strict=False):
            bn, holder = parent._modules[name], parent
            if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
                continue
            conv_parent, conv_name = _last_conv(holder, before)
            if conv_parent is None:
                continue
            conv = conv_parent._modules[conv_name]
            conv_parent._modules[conv_name] = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
            parent._modules[name] = nn.Identity()
    return model


def _last_conv(parent: nn.Module, name: str) -> tuple[nn.Module | None, str]:
    """(module holding it, its name) for the Conv2d that is `parent.name` or ends it, else (None, '')."""
    module = parent._modules[name]
    while isinstance(module, nn.Sequential) and len(module):
        parent, name = module, list(module._modules)[-1]
        module = module._modules[name]
    return (parent, name) if isinstance(module, nn.Conv2d) else (None, "")


def to_onnx(
    model: nn.Module, input_chw: tuple[int, int, int], opset: int, batch: int | None
) -> onnx.ModelProto:
    """Export `model` (BN folded, eval mode) to one self-contained, simplified, checked ONNX model.

    Exporter: the TorchScript one (`dynamo=False`). The dynamo exporter, torch's default since 2.9,
    needs onnxscript (not an edgekit dependency), writes weights to a separate `.data` file unless
    told not to and attaches per-node debug metadata (stack traces, module scopes) several times the
    size of a small model's weights. The TorchScript exporter gives a single small file with
    readable node names, folds Conv+BN in eval mode and handles every model family in the zoo. It
    warns that it is deprecated; that warning is silenced here and `strip_debug` below would clean a
    dynamo export the same way if this ever has to switch.
    """
    import onnxslim

    model = fold_batchnorm(model)
    example = torch.zeros(batch or 1, *input_chw)
    buffer = io.BytesIO()
    dynamic = None if batch else {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes=dynamic,
        )
    proto = onnx.load_model_from_string(buffer.getvalue())
    proto = onnxslim.slim(proto)  # constant folding, dead-node and common-subexpression elimination
    strip_debug(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def strip_debug(proto: onnx.ModelProto) -> None:
    """Remove doc strings and per-node metadata (stack traces, scopes): they travel in every copy."""
    proto.doc_string = ""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            for attribute in node.attribute:  # subgraphs of If/Loop/Scan
                graphs.extend([attribute.g] if attribute.HasField("g") else [])
                graphs.extend(attribute.graphs)
        for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
            value.doc_string = ""
            del value.metadata_props[:]
    for function in proto.functions:
        for node in function.node:
            node.doc_string = ""
            del node.metadata_props[:]


def op_count(proto: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in proto.graph.node)


def embed_metadata(proto: onnx.ModelProto, meta: dict[str, Any]) -> None:
    """Put `meta` (compact JSON) under the model's metadata_props key 'edgekit', as Ultralytics does."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "edgekit", json.dumps(meta, separators=(",", ":"))
