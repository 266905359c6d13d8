"""Triton model configs as protobufs: read, write, and check that a repository is wired right.

Configs are parsed with Triton's own `ModelConfig` message (shipped in tritonclient), so a field
Triton does not know fails here, not on a GPU box. The checks say in words what does not fit:
ensemble steps against the models they call, and graph tensors against the export manifest.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from runtime.manifest import Manifest

CONFIG_FILE = "config.pbtxt"
ENSEMBLE = "ensemble"
_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "bool": "TYPE_BOOL"}


def load_config(path: str | Path) -> mc.ModelConfig:
    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


def dump_config(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def load_configs(repository: str | Path) -> dict[str, mc.ModelConfig]:
    """Every `<repository>/<model>/config.pbtxt`, by model name (the folder name, as Triton uses it)."""
    configs = {}
    for path in sorted(Path(repository).glob(f"*/{CONFIG_FILE}")):
        config = load_config(path)
        if config.name and config.name != path.parent.name:
            raise ValueError(f"{path}: name {config.name!r} differs from its folder {path.parent.name!r}")
        config.name = path.parent.name
        configs[config.name] = config
    return configs


def is_ensemble(config: mc.ModelConfig) -> bool:
    return config.platform == ENSEMBLE


def is_graph(config: mc.ModelConfig) -> bool:
    """A model that Triton's onnxruntime backend serves (GPU configs) - one exported ONNX graph."""
    return config.backend == "onnxruntime" or config.platform == "onnxruntime_onnx"


def tensors(config: mc.ModelConfig, kind: str) -> dict[str, mc.ModelInput | mc.ModelOutput]:
    return {t.name: t for t in (config.input if kind == "input" else config.output)}


def _signature(tensor) -> tuple[str, tuple[int, ...]]:
    return mc.DataType.Name(tensor.data_type), tuple(tensor.dims)


def _effective_signature(tensor) -> tuple[str, tuple[int, ...]]:
    """Dims as the graph sees them (a `reshape` replaces the declared dims)."""
    dims = tuple(tensor.reshape.shape) if tensor.HasField("reshape") else tuple(tensor.dims)
    return mc.DataType.Name(tensor.data_type), dims


def check_ensembles(configs: dict[str, mc.ModelConfig]) -> list[str]:
    """Problems in ensemble wiring: unknown steps, unmapped or unknown tensors, type/dim mismatches."""
    problems = []
    for name, config in configs.items():
        if not is_ensemble(config):
            continue
        # ensemble tensor -> (dtype, dims) as seen by whoever produces / consumes it
        produced = {t.name: _signature(t) for t in config.input}
        consumers: list[tuple[str, str, tuple]] = []
        for step in config.ensemble_scheduling.step:
            target = configs.get(step.model_name)
            if target is None:
                problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
                continue
            if target.max_batch_size < config.max_batch_size:
                problems.append(f"{name}: max_batch_size {config.max_batch_size} > {step.model_name}'s {target.max_batch_size}")
            inputs, outputs = tensors(target, "input"), tensors(target, "output")
            for model_tensor, ens_tensor in step.input_map.items():
                if model_tensor not in inputs:
                    problems.append(f"{name}: {step.model_name} has no input {model_tensor!r}")
                    continue
                consumers.append((ens_tensor, f"{step.model_name}.{model_tensor}", _signature(inputs[model_tensor])))
            for model_tensor, tensor in inputs.items():
                if model_tensor not in step.input_map and not tensor.optional:
                    problems.append(f"{name}: input {model_tensor!r} of {step.model_name} is not mapped")
            for model_tensor, ens_tensor in step.output_map.items():
                if model_tensor not in outputs:
                    problems.append(f"{name}: {step.model_name} has no output {model_tensor!r}")
                    continue
                if ens_tensor in produced:
                    problems.append(f"{name}: tensor {ens_tensor!r} is produced twice")
                produced[ens_tensor] = _signature(outputs[model_tensor])
        for output in config.output:
            consumers.append((output.name, f"{name} output", _signature(output)))
        for ens_tensor, where, signature in consumers:
            if ens_tensor not in produced:
                problems.append(f"{name}: {where} reads {ens_tensor!r}, which nothing produces")
            elif produced[ens_tensor] != signature:
                problems.append(f"{name}: {ens_tensor!r} is {produced[ens_tensor]} where produced but {where} wants {signature}")
    return problems


def expected_graph_tensors(manifest: Manifest, model: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (Triton dtype, dims without the batch axis) of one graph, from the manifest."""
    entry = manifest.model(model)
    table = {}
    for item in [*entry["inputs"], *entry["outputs"]]:
        shape = [int(d) if isinstance(d, int) or str(d).lstrip("-").isdigit() else -1 for d in item["shape"]]
        table[item["name"]] = (_DTYPES[item["dtype"]], tuple(shape[1:]))
    return table


def check_graph_dims(configs: dict[str, mc.ModelConfig], manifest: Manifest, graphs: Iterable[str]) -> list[str]:
    """Problems where a graph model's config disagrees with the manifest (names, dtypes, dims)."""
    problems = []
    for model in graphs:
        config = configs[model]
        declared = {t.name: _effective_signature(t) for t in [*config.input, *config.output]}
        expected = expected_graph_tensors(manifest, model)
        for tensor, signature in expected.items():
            if tensor not in declared:
                problems.append(f"{model}: the graph's tensor {tensor!r} is not in the config")
            elif declared[tensor] != signature:
                problems.append(f"{model}.{tensor}: config says {declared[tensor]}, manifest says {signature}")
        for tensor in declared.keys() - expected.keys():
            problems.append(f"{model}: config tensor {tensor!r} is not in the graph")
    return problems
