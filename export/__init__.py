"""Checkpoints (open_clip, transformers BLIP) -> ONNX graphs + manifest for Triton and ONNX Runtime."""
