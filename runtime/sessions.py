"""Inference sessions with the engines, providers and threading this project uses everywhere.

Two engines run the same exported ONNX graphs: ONNX Runtime (default) and OpenVINO (CPU; reads
the ONNX file directly, QDQ int8 graphs run as int8 kernels). `openvino` keeps fp32 precision
(the graph's own); `openvino-bf16` lets OpenVINO compute the non-int8 layers in bfloat16, which it
otherwise picks by itself on CPUs with AMX / AVX-512 BF16 (so the name says what runs, on any host). Both are behind one duck type, the
ONNX Runtime session API that every consumer already uses: `run(output_names, feeds)`,
`get_inputs()`, `get_outputs()`. Export, the local backend and Triton's CPU python models all
create sessions here, so a choice of engine applies to each of them alike.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

ENGINES = ("onnxruntime", "openvino", "openvino-bf16")
AUTO = "auto"  # openvino-bf16 where the CPU computes bf16 natively and openvino is installed, else onnxruntime
_OPENVINO_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16"}


def default_providers() -> list[str]:
    """GPU first (TensorRT is Triton's job; in-process we use CUDA), CPU always last."""
    available = set(ort.get_available_providers())
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def cpu_has_native_bf16() -> bool:
    """AMX or AVX-512 BF16 (Sapphire Rapids and later; Zen 4): where bf16 GEMMs beat fp32 ones."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_engine(engine: str | None) -> str:
    """`auto` (and None: MM_ENGINE, else onnxruntime) -> a concrete engine name."""
    engine = engine or os.environ.get("MM_ENGINE", "onnxruntime")
    if engine != AUTO:
        return engine
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "onnxruntime"
    return "openvino-bf16" if cpu_has_native_bf16() else "onnxruntime"


def _threads(intra_op_threads: int | None) -> int:
    return intra_op_threads if intra_op_threads is not None else int(os.environ.get("MM_ORT_THREADS", "0"))


def create_session(
    path: str | Path,
    providers: list[str] | None = None,
    intra_op_threads: int | None = None,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    engine: str | None = None,
) -> Any:
    """A session on `engine` (default: MM_ENGINE, else onnxruntime; `auto`: see resolve_engine) with the ONNX Runtime run() API."""
    engine = resolve_engine(engine)
    if engine in _OPENVINO_PRECISION:
        return OpenVinoSession(path, _threads(intra_op_threads), _OPENVINO_PRECISION[engine])
    if engine != "onnxruntime":
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join((AUTO, *ENGINES))}")
    options = ort.SessionOptions()
    options.graph_optimization_level = optimization
    threads = _threads(intra_op_threads)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: a gateway runs several sessions (text, image,
    # BLIP) beside the store client on few cores, and spinning threads steal the cores a busy session
    # needs. An A/B on the 2-core CPU machine (ORT fp32 ViT-B-32 gateway, concurrency 16, two alternated
    # blocks; the round-3 note on issue 14): +3% text and +9% image queries per second with spinning off.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or default_providers())


@dataclass(frozen=True)
class TensorInfo:
    """What ONNX Runtime's NodeArg tells consumers: name, shape (None for dynamic) and type."""

    name: str
    shape: list
    type: str


class OpenVinoSession:
    """An OpenVINO CPU compiled model behind ONNX Runtime's session API (latency hint, one request at a time per call)."""

    def __init__(self, path: str | Path, threads: int = 0, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._model = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._inputs = [TensorInfo(p.get_any_name(), _shape(p), str(p.get_element_type())) for p in self._model.inputs]
        self._outputs = [TensorInfo(p.get_any_name(), _shape(p), str(p.get_element_type())) for p in self._model.outputs]

    def get_inputs(self) -> list[TensorInfo]:
        return self._inputs

    def get_outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        # a fresh infer request per call: thread-safe like ORT's run (calls may come from several threads)
        request = self._model.create_infer_request()
        results = request.infer({name: np.ascontiguousarray(value) for name, value in feeds.items()})
        by_name = {port.get_any_name(): np.asarray(value) for port, value in results.items()}
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        return [by_name[name] for name in names]


def _shape(port) -> list:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
