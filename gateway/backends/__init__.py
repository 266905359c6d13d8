"""Inference backends: `local` (ONNX Runtime in-process) and `triton` (tritonclient gRPC aio)."""
