"""Reduced-precision variants of an exported fp32 graph, with their parity against it.

int8: ONNX Runtime dynamic quantization (weights int8, activations quantized on the fly), for CPU.
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

VARIANTS = ("int8", "fp16")


def write_int8(source: Path, target: Path, op_types: Sequence[str] | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types) if op_types else None,
        extra_options={"MatMulConstBOnly": True},
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
    session = create_session(path, providers=["CPUExecutionProvider"], optimization=level)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def add_variants(
    staging: Path,
    model_name: str,
    variants: Sequence[str],
    feeds: Mapping[str, np.ndarray],
    int8_op_types: Sequence[str] | None = None,
) -> dict[str, dict]:
    """Write the requested variants beside the fp32 graph; return their manifest rows with parity."""
    source = staging / model_file(model_name, "fp32")
    reference = run_graph(source, feeds)
    rows: dict[str, dict] = {}
    for variant in variants:
        target = staging / model_file(model_name, variant)
        if variant == "int8":
            write_int8(source, target, int8_op_types)
        elif variant == "fp16":
            write_fp16(source, target)
        else:
            raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
        parity = compare(reference, run_graph(target, feeds, variant))
        rows[variant] = graph_entry(staging, model_name, variant, parity_vs_fp32=parity)
    return rows
