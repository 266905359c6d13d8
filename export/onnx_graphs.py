"""Writing one ONNX graph and describing it in the manifest: shared by the CLIP and BLIP exporters."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
import torch

from runtime.manifest import model_file, sha256_file

DEFAULT_OPSET = 17


def export_module(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = DEFAULT_OPSET,
) -> None:
    """torch -> ONNX with the TorchScript exporter (predictable names and dynamic axes), then checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    # Grad stays enabled while tracing: under no_grad, nn.MultiheadAttention takes its fused fast
    # path (aten::_native_multi_head_attention), which has no ONNX symbolic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))


def fix_dims(path: Path, dims: Mapping[str, Sequence[int]]) -> None:
    """Write static dims the tracer left symbolic (e.g. the embedding width) into the graph's outputs."""
    model = onnx.load(str(path))
    for output in model.graph.output:
        if output.name in dims:
            for dim, value in zip(output.type.tensor_type.shape.dim, dims[output.name]):
                if value > 0:
                    dim.Clear()
                    dim.dim_value = value
                else:
                    dim.dim_param = dim.dim_param or "batch"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def tensor_specs(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of a graph as manifest rows: name, dtype, shape (-1 for dynamic dims)."""
    model = onnx.load(str(path), load_external_data=False)

    def rows(values) -> list[dict]:
        out = []
        for value in values:
            tensor_type = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
            out.append({"name": value.name, "dtype": dtype, "shape": dims})
        return out

    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return rows(inputs), rows(model.graph.output)


def graph_entry(staging: Path, model_name: str, variant: str = "fp32", **extra: Any) -> dict[str, Any]:
    """Manifest row for a graph already written at its place under `staging`."""
    relative = model_file(model_name, variant)
    inputs, outputs = tensor_specs(staging / relative)
    return {"file": relative, "sha256": sha256_file(staging / relative), "inputs": inputs, "outputs": outputs, **extra}


def compare(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output: max abs diff and the smallest row-wise cosine similarity (rows = first axis)."""
    report = {}
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(candidate[name], dtype=np.float64)
        if ref.shape != got.shape:
            raise AssertionError(f"{name}: shape {got.shape} != reference {ref.shape}")
        a = ref.reshape(ref.shape[0], -1)
        b = got.reshape(got.shape[0], -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)
        report[name] = {
            "max_abs_diff": float(np.max(np.abs(ref - got))) if ref.size else 0.0,
            "min_cosine": float(np.min(cosine)) if cosine.size else 1.0,
        }
    return report
