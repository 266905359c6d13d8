"""ONNX Runtime sessions with the providers and threading this project uses everywhere."""
from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort


def default_providers() -> list[str]:
    """GPU first (TensorRT is Triton's job; in-process we use CUDA), CPU always last."""
    available = set(ort.get_available_providers())
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def create_session(
    path: str | Path,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = optimization
    threads = intra_op_threads if intra_op_threads is not None else int(os.environ.get("MM_ORT_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or default_providers())
