"""Render the committed (GPU) model repository for a CPU-only Triton: same names, tensors, ensembles.

What changes, and only that:
- `preprocess_image` decodes with Pillow (`decoder: "pil"`) instead of DALI on the GPU;
- graph models (`backend: "onnxruntime"`) become python models that run the exported ONNX file with
  ONNX Runtime (`python_models/onnx_model.py`, linked as `1/model.py`; the graph linked as
  `1/model.onnx`), KIND_CPU, without the TensorRT accelerator and the warm-up (TRT engine builds);
- dims follow the export manifest (the committed configs carry the base preset's dims; the tiny
  preset has smaller ones), propagated through the ensembles to the python models that feed graphs;
- python models get a `manifest_repository` parameter pointing at the exported repository, and the
  embed_* ensembles a `model` parameter (the CLIP architecture, which the gateway reports);
- optionally dynamic batching off (`max_batch_size: 1`, no `dynamic_batching`), the benchmark baseline.
Everything is linked (symlinks), not copied; the result lives in a build dir.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from runtime.manifest import BLIP_DECODER_INIT, BLIP_DECODER_STEP, BLIP_ITM, BLIP_VISION, CLIP_IMAGE, CLIP_TEXT, Manifest, ManifestError
from runtime.triton_contract import (
    CAPTION,
    EMBED_IMAGE,
    EMBED_TEXT,
    MANIFEST_PARAMETER,
    MODEL_PARAMETER,
    PREPROCESS_IMAGE,
    PREPROCESS_ITM,
    TOKENIZE_TEXT,
)
from triton_runner import repository as repo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
COMMITTED_REPOSITORY = PROJECT_ROOT / "model_repository"
ONNX_PYTHON_MODEL = Path(__file__).resolve().parent / "python_models" / "onnx_model.py"
MARKER = ".rendered.json"
# Python models and the graphs they need (a python model's BLS calls are not visible in its config).
PYTHON_REQUIRES = {
    PREPROCESS_IMAGE: [CLIP_IMAGE],
    TOKENIZE_TEXT: [CLIP_TEXT],
    CAPTION: [BLIP_VISION, BLIP_DECODER_INIT, BLIP_DECODER_STEP],
    PREPROCESS_ITM: [BLIP_ITM],
}


class RenderError(RuntimeError):
    """The committed configs and the exported repository do not fit together."""


def _select(configs: dict[str, mc.ModelConfig], manifest: Manifest) -> list[str]:
    """Models that can run with what was exported (no BLIP export -> no caption, no blip_* models)."""
    chosen = {name for name, c in configs.items() if repo.is_graph(c) and manifest.has_model(name)}
    for name, config in configs.items():
        if config.backend == "python" and all(dep in chosen for dep in PYTHON_REQUIRES.get(name, [])):
            chosen.add(name)
    for name, config in configs.items():
        if repo.is_ensemble(config) and all(s.model_name in chosen for s in config.ensemble_scheduling.step):
            chosen.add(name)
    return sorted(chosen)


_KV_NAME = re.compile(r"^(past_key_values|present)\.\d+\.")


def _set_graph_tensors(config: mc.ModelConfig, manifest: Manifest) -> None:
    """Inputs/outputs exactly as the exported graph has them (dims, and the KV tensors of its layers)."""
    expected = repo.expected_graph_tensors(manifest, config.name)
    declared = {t.name: t for t in [*config.input, *config.output]}
    for name, tensor in declared.items():
        if name not in expected and not _KV_NAME.match(name):
            raise RenderError(f"{config.name}: config tensor {name!r} is not in the exported graph")
        if name in expected and mc.DataType.Name(tensor.data_type) != expected[name][0]:
            raise RenderError(f"{config.name}.{name}: config {mc.DataType.Name(tensor.data_type)}, graph {expected[name][0]}")
    entry = manifest.model(config.name)
    for kind, rows in (("input", entry["inputs"]), ("output", entry["outputs"])):
        config.ClearField(kind)
        for row in rows:
            dtype, dims = expected[row["name"]]
            tensor = getattr(config, kind).add(name=row["name"], data_type=mc.DataType.Value(dtype))
            if dims:
                tensor.dims.extend(dims)
            else:  # one scalar per batch row: Triton's idiom is dims [1] reshaped to []
                tensor.dims.append(1)
                tensor.reshape.SetInParent()


def _propagate_dims(configs: dict[str, mc.ModelConfig]) -> None:
    """Copy graph tensor dims to the ensemble tensors and to the python models wired to them."""
    for config in configs.values():
        if not repo.is_ensemble(config):
            continue
        steps = config.ensemble_scheduling.step
        dims: dict[str, list[int]] = {}
        for step in steps:
            target = configs[step.model_name]
            if target.backend == "python" and "onnx_file" not in target.parameters:
                continue  # python preprocessing: takes its dims from the graphs
            inputs, outputs = repo.tensors(target, "input"), repo.tensors(target, "output")
            dims.update({ens: list(inputs[m].dims) for m, ens in step.input_map.items()})
            dims.update({ens: list(outputs[m].dims) for m, ens in step.output_map.items()})
        for step in steps:
            target = configs[step.model_name]
            for kind, mapping in (("input", step.input_map), ("output", step.output_map)):
                table = repo.tensors(target, kind)
                for model_tensor, ens_tensor in mapping.items():
                    if ens_tensor in dims:
                        table[model_tensor].ClearField("dims")
                        table[model_tensor].dims.extend(dims[ens_tensor])
        for tensor in [*config.input, *config.output]:
            if tensor.name in dims:
                tensor.ClearField("dims")
                tensor.dims.extend(dims[tensor.name])


def _string_parameter(config: mc.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def _cpu_instance(config: mc.ModelConfig, count: int) -> None:
    config.ClearField("instance_group")
    config.instance_group.add(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)


def _prepare_out(out: Path) -> None:
    """An empty `out`, marked as ours first, so a failed rendering can be replaced by the next one."""
    if out.exists():
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise RenderError(f"{out} exists and was not rendered by this tool; pick an empty or new directory")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"complete": False}) + "\n")


def _render_graph(config: mc.ModelConfig, manifest: Manifest, version_dir: Path, variant: str, threads: int) -> None:
    """onnxruntime backend (GPU) -> the generic ONNX Runtime python model (CPU) on the linked graph."""
    has_variant = variant in manifest.model(config.name).get("variants", {})
    graph = manifest.graph_path(config.name, variant if has_variant else "fp32")
    _set_graph_tensors(config, manifest)
    config.backend = "python"
    config.ClearField("platform")
    config.ClearField("optimization")  # TensorRT / CUDA accelerators
    config.ClearField("model_warmup")  # builds TensorRT engines; nothing to build here
    _cpu_instance(config, 1)
    _string_parameter(config, "onnx_file", "model.onnx")
    _string_parameter(config, "intra_op_threads", str(threads))
    (version_dir / "model.onnx").symlink_to(graph.resolve())
    (version_dir / "model.py").symlink_to(ONNX_PYTHON_MODEL)


def _render_python(config: mc.ModelConfig, configs_dir: Path, version_dir: Path) -> None:
    """Python models stay as they are (they already run on the CPU); their code is linked."""
    _cpu_instance(config, max(1, config.instance_group[0].count if config.instance_group else 1))
    if "decoder" in config.parameters:  # GPU image decoding (DALI) -> Pillow on a thread pool
        _string_parameter(config, "decoder", "pil")
    (version_dir / "model.py").symlink_to((configs_dir / config.name / "1" / "model.py").resolve())


def render_cpu(
    source: str | Path,
    out: str | Path,
    configs_dir: str | Path = COMMITTED_REPOSITORY,
    variant: str = "fp32",
    dynamic_batching: bool = True,
    intra_op_threads: int = 1,
    queue_delay_us: int | None = None,
    decode_threads: int | None = None,
) -> list[str]:
    """Write the CPU repository into `out` (replacing an earlier rendering); returns the model names.

    `queue_delay_us` overrides every `max_queue_delay_microseconds` (and drops the preferred batch
    sizes when 0: batches are then whatever queued while the instance was busy). `decode_threads`
    sets preprocess_image's thread pool per instance (0: one per core).
    """
    source, out, configs_dir = Path(source).resolve(), Path(out).resolve(), Path(configs_dir).resolve()
    try:
        manifest = Manifest.load(source)
    except ManifestError as exc:
        raise RenderError(str(exc)) from None
    configs = repo.load_configs(configs_dir)
    names = _select(configs, manifest)
    if not names:
        raise RenderError(f"nothing to render: no model of {configs_dir} matches the graphs in {source}")
    chosen = {name: configs[name] for name in names}
    _prepare_out(out)
    for name, config in chosen.items():
        version_dir = out / name / "1"
        version_dir.mkdir(parents=True)
        if repo.is_graph(config):
            _render_graph(config, manifest, version_dir, variant, intra_op_threads)
        elif config.backend == "python":
            _render_python(config, configs_dir, version_dir)
            if decode_threads is not None and "decode_threads" in config.parameters:
                _string_parameter(config, "decode_threads", str(decode_threads))
        if not repo.is_ensemble(config):
            _string_parameter(config, MANIFEST_PARAMETER, str(source))
        elif name in (EMBED_IMAGE, EMBED_TEXT):  # what the gateway reports as Embed.model
            _string_parameter(config, MODEL_PARAMETER, str(manifest.clip.get("arch", "")))
        if not dynamic_batching:
            config.max_batch_size = 1
            config.ClearField("dynamic_batching")
        elif queue_delay_us is not None and config.HasField("dynamic_batching"):
            config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
            if queue_delay_us == 0:
                config.dynamic_batching.ClearField("preferred_batch_size")
    _propagate_dims(chosen)
    problems = repo.check_ensembles(chosen) + repo.check_graph_dims(chosen, manifest, [n for n in names if manifest.has_model(n)])
    if problems:
        raise RenderError("rendered repository is inconsistent:\n  " + "\n  ".join(problems))
    for name, config in chosen.items():
        header = f"# Rendered for CPU by `python -m triton_runner render` from {configs_dir / name}; do not edit.\n"
        (out / name / repo.CONFIG_FILE).write_text(header + repo.dump_config(config))
    marker = {"complete": True, "source": str(source), "configs": str(configs_dir), "variant": variant,
              "dynamic_batching": dynamic_batching, "queue_delay_us": queue_delay_us, "decode_threads": decode_threads,
              "models": names}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return names


def not_rendered(repository: str | Path) -> str | None:
    """One line saying why `repository` cannot be served on this CPU Triton and what to run; None if it can."""
    repository = Path(repository)
    marker = repository / MARKER
    render = f"python -m triton_runner render --source {repository} --out build/triton_cpu"
    if marker.is_file():
        if json.loads(marker.read_text()).get("complete"):
            return None
        return f"{repository} is an unfinished rendering: run `{render.replace(str(repository), '<export>')}` again"
    if (repository / "manifest.json").is_file():
        return (f"{repository} is an export (GPU configs), not rendered for this CPU Triton: run `{render}`, "
                "then `python -m triton_runner serve --repository build/triton_cpu`")
    if not repository.is_dir():
        return f"{repository} does not exist: export (`python -m export --out model_repository`), then `{render.replace(str(repository), 'model_repository')}`"
    return (f"{repository} was not rendered by `python -m triton_runner render`: export models (`python -m export --out <export>`), "
            "then run `python -m triton_runner render --source <export> --out build/triton_cpu`")
