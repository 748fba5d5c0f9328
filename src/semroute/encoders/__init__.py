"""Text in, L2-normalised float32 vectors out: the ONNX and static runtimes, their export and cache."""
