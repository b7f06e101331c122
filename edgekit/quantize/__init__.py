"""Quantization, after export (ONNX bundles only, no torch): int8 chosen on val, fp16, dynamic, lean."""
