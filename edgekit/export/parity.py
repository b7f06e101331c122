"""Parity: the torch model and its ONNX export through onnxruntime, on real images, logit for logit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from edgekit.errors import EdgekitError
from edgekit.runtimes import logits_over

ATOL = 1e-4  # max |torch logit − onnxruntime logit| allowed on any image
CHUNK = 256  # images per run for a dynamic-batch model


def session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_onnx(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    """Logits for every image of `x`, in chunks; a fixed-batch model gets its last chunk zero-padded."""
    spec = sess.get_inputs()[0]
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
    return logits_over(lambda chunk: sess.run(None, {spec.name: chunk})[0], x, fixed, CHUNK)


def run_torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        chunks = np.array_split(x, max(1, math.ceil(len(x) / CHUNK)))
        return torch.cat([model(torch.from_numpy(np.ascontiguousarray(c))) for c in chunks]).numpy()


def check_parity(
    model: nn.Module, sess: ort.InferenceSession, x: np.ndarray, atol: float = ATOL
) -> dict[str, Any]:
    """Compare logits of `model` (torch, CPU) and `sess` (onnxruntime) on preprocessed images `x`.

    Returns {max_abs_diff, top1_agreement, images, atol}; raises EdgekitError when any logit differs
    by more than `atol` or any image gets a different top-1 class.
    """
    if len(x) == 0:
        raise EdgekitError("parity check: no images to compare on (the run's validation split is empty)")
    expected = run_torch(model, x)
    got = run_onnx(sess, x)
    diff = float(np.abs(expected - got).max())
    same = expected.argmax(1) == got.argmax(1)
    result = {
        "max_abs_diff": diff,
        "top1_agreement": float(same.mean()),
        "images": len(x),
        "atol": atol,
    }
    if not diff <= atol or not same.all():  # `not <=` also catches NaN
        raise EdgekitError(
            f"parity check failed on {len(x)} validation images: max |logit difference| {diff:.3g} "
            f"(allowed {atol:g}), top-1 differs on {int((~same).sum())} images"
        )
    return result


def accuracy(sess: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float | None:
    """Top-1 accuracy of the ONNX model on (x, y) through onnxruntime."""
    return float((run_onnx(sess, x).argmax(1) == y).mean()) if len(y) else None
