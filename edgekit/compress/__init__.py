"""The compress stage: pruning with torch-pruning, quantization with onnxruntime."""
