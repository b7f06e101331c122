"""The export stage: a run's checkpoint → an ONNX bundle (`onnx.py` exports, `parity.py` checks, `write.py`
assembles). `edgekit.export.write.export_run` is what `edgekit export --onnx` calls."""
