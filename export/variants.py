"""Reduced-precision variants of an exported fp32 graph, with their parity against it.

int8: ONNX Runtime dynamic quantization (weights int8, activations quantized on the fly), for CPU.
int8_static: static QDQ quantization calibrated on real preprocessed inputs (weights per channel,
activations with ranges fixed at export): int8 GEMMs with no run-time range pass, for CPU
(ONNX Runtime's VNNI kernels, and OpenVINO, which runs QDQ graphs as int8).
fp16: float16 weights and compute with fp32 inputs/outputs kept, for GPU (slow on the CPU provider).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from export.onnx_graphs import compare, graph_entry
from runtime.manifest import model_file
from runtime.sessions import create_session

VARIANTS = ("int8", "int8_static", "fp16")


def write_int8(source: Path, target: Path, op_types: Sequence[str] | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types) if op_types else None,
        extra_options={"MatMulConstBOnly": True},
    )


def write_int8_static(
    source: Path, target: Path, calibration: Sequence[Mapping[str, np.ndarray]], op_types: Sequence[str] | None = None
) -> None:
    """QDQ int8 with activation ranges from `calibration` (feeds of real preprocessed inputs).

    Only MatMul/Conv/Gemm are quantized: LayerNorm, Softmax and GELU stay fp32, which keeps the
    error of ViT/transformer towers small (their activations have outlier channels).
    """
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(calibration)

        def get_next(self):
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types or ("MatMul", "Conv", "Gemm")),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibTensorRangeSymmetric": False},
        )


def write_fp16(source: Path, target: Path) -> None:
    # ONNX Runtime's converter (not onnxconverter-common's, which mistypes the Cast nodes that
    # open_clip's graphs contain).
    from onnxruntime.transformers.onnx_model import OnnxModel

    # Its symbolic shape inference fails on these graphs and says so on stdout/log; the conversion
    # itself is fine (parity is measured right after).
    logging.getLogger("onnxruntime.transformers.onnx_model").setLevel(logging.ERROR)
    model = OnnxModel(onnx.load(str(source)))
    with contextlib.redirect_stdout(io.StringIO()):
        model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))


def run_graph(path: Path, feeds: Mapping[str, np.ndarray], variant: str = "fp32") -> dict[str, np.ndarray]:
    # fp16 graphs are checked with basic optimizations: ORT_ENABLE_ALL fuses fp16 nodes the CPU
    # provider cannot run. On GPU the full level is used.
    level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if variant == "fp16" else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = create_session(path, providers=["CPUExecutionProvider"], optimization=level, engine="onnxruntime")
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def add_variants(
    staging: Path,
    model_name: str,
    variants: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    int8_op_types: Sequence[str] | None = None,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> dict[str, dict]:
    """Write the requested variants beside the fp32 graph; return their manifest rows with parity."""
    source = staging / model_file(model_name, "fp32")
    reference = run_graph(source, feeds)
    rows: dict[str, dict] = {}
    for variant in variants:
        target = staging / model_file(model_name, variant)
        if variant == "int8":
            write_int8(source, target, int8_op_types)
        elif variant == "int8_static":
            write_int8_static(source, target, calibration or [dict(feeds)])
        elif variant == "fp16":
            write_fp16(source, target)
        else:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        parity = compare(reference, run_graph(target, feeds, variant))
        rows[variant] = graph_entry(staging, model_name, variant, parity_vs_fp32=parity)
    return rows
