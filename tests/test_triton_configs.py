"""The committed Triton repository (GPU) and its CPU rendering, checked with Triton's ModelConfig protobuf."""
from __future__ import annotations

import json
import importlib.util
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from runtime import triton_contract as contract
from runtime.manifest import Manifest
from triton_runner import repository as repo
from triton_runner.render import MARKER, RenderError, render_cpu

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "model_repository"
GRAPHS = [contract.CLIP_IMAGE, contract.CLIP_TEXT, contract.BLIP_VISION, contract.BLIP_DECODER_INIT,
          contract.BLIP_DECODER_STEP, contract.BLIP_ITM]
PYTHON_MODELS = [contract.PREPROCESS_IMAGE, contract.TOKENIZE_TEXT, contract.CAPTION, contract.PREPROCESS_ITM]
EMBEDDERS = [contract.EMBED_IMAGE, contract.EMBED_TEXT]
ENSEMBLES = [*EMBEDDERS, contract.RERANK]


@pytest.fixture(scope="module")
def committed() -> dict[str, mc.ModelConfig]:
    return repo.load_configs(COMMITTED)


def test_every_config_parses_strictly_as_a_triton_model_config():
    paths = sorted(COMMITTED.glob("*/config.pbtxt"))
    assert {p.parent.name for p in paths} == set(GRAPHS + PYTHON_MODELS + ENSEMBLES)
    for path in paths:
        config = text_format.Parse(path.read_text(), mc.ModelConfig())  # unknown fields raise
        assert config.name == path.parent.name


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_models_are_gpu_onnxruntime_with_tensorrt_fp16_batching_and_warmup(committed, name):
    config = committed[name]
    assert config.backend == "onnxruntime" and config.max_batch_size >= 16
    assert list(config.dynamic_batching.preferred_batch_size) and config.dynamic_batching.max_queue_delay_microseconds > 0
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "true"
    assert accelerator.parameters["trt_engine_cache_path"].endswith(f"/{name}")
    assert config.model_warmup
    declared = {t.name for t in [*config.input, *config.output]}
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {t.name for t in config.input} and warmup.batch_size >= 1
        assert set(warmup.inputs) <= declared


@pytest.mark.parametrize("name", PYTHON_MODELS)
def test_python_models_sit_next_to_their_code_and_batch(committed, name):
    config = committed[name]
    assert config.backend == "python" and config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert all(g.kind == mc.ModelInstanceGroup.KIND_CPU for g in config.instance_group)
    source = (COMMITTED / name / "1" / "model.py").read_text()
    assert "class TritonPythonModel" in source and "from preprocessing." in source  # the shared module, not a copy


def test_ensembles_are_wired_to_the_models_they_call(committed):
    assert repo.check_ensembles(committed) == []
    for name, steps in ((contract.EMBED_IMAGE, [contract.PREPROCESS_IMAGE, contract.CLIP_IMAGE]),
                        (contract.EMBED_TEXT, [contract.TOKENIZE_TEXT, contract.CLIP_TEXT])):
        config = committed[name]
        assert repo.is_ensemble(config) and [s.model_name for s in config.ensemble_scheduling.step] == steps
        assert (COMMITTED / name / "1").is_dir()
    assert [t.name for t in committed[contract.EMBED_IMAGE].input] == [contract.IMAGE_BYTES]
    assert [t.name for t in committed[contract.EMBED_TEXT].input] == [contract.TEXT]
    for name in EMBEDDERS:
        assert [t.name for t in committed[name].output] == [contract.EMBEDDING]
    assert [t.name for t in committed[contract.CAPTION].output] == [contract.CAPTION_TEXT]
    rerank = committed[contract.RERANK]
    assert [s.model_name for s in rerank.ensemble_scheduling.step] == [contract.PREPROCESS_ITM, contract.BLIP_ITM]
    assert [t.name for t in rerank.input] == [contract.IMAGE_BYTES, contract.TEXT]
    assert [t.name for t in rerank.output] == [contract.SCORE]


def test_wiring_check_names_what_is_broken(committed):
    broken = {name: mc.ModelConfig.FromString(c.SerializeToString()) for name, c in committed.items()}
    step = broken[contract.EMBED_TEXT].ensemble_scheduling.step[1]
    del step.output_map["text_embeds"]
    step.output_map["embeddings"] = "EMBEDDING"
    broken[contract.EMBED_IMAGE].input[0].dims[:] = [2]
    problems = repo.check_ensembles(broken)
    assert any("clip_text has no output 'embeddings'" in p for p in problems)
    assert any("'EMBEDDING', which nothing produces" in p for p in problems)
    assert any("embed_image: 'IMAGE_BYTES'" in p for p in problems)


# Salesforce/blip-image-captioning-base config.json where it differs from transformers' BlipConfig defaults.
BLIP_BASE = {"text_config": {"num_attention_heads": 12}, "vision_config": {"image_size": 384}}


def _open_clip_config(arch: str) -> dict:
    spec = importlib.util.find_spec("open_clip")  # read the JSON only: importing open_clip pulls in torch
    return json.loads((Path(spec.origin).parent / "model_configs" / f"{arch}.json").read_text())


def test_committed_dims_are_the_base_presets_models(committed):
    """The committed configs describe the `base` preset: open_clip ViT-B-32 and BLIP base."""
    from transformers import BlipConfig

    clip = _open_clip_config("ViT-B-32")
    size, dim, context = clip["vision_cfg"]["image_size"], clip["embed_dim"], clip["text_cfg"]["context_length"]
    blip = BlipConfig(**BLIP_BASE)
    vision, text = blip.vision_config, blip.text_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    heads, head_dim = text.num_attention_heads, text.hidden_size // text.num_attention_heads
    sig = lambda t: (mc.DataType.Name(t.data_type), list(t.dims))  # noqa: E731
    io = lambda name: {t.name: sig(t) for t in [*committed[name].input, *committed[name].output]}  # noqa: E731
    for name in EMBEDDERS:  # Embed.model on the GPU deployment
        assert committed[name].parameters[contract.MODEL_PARAMETER].string_value == "ViT-B-32"
    assert io(contract.CLIP_IMAGE) == {"pixel_values": ("TYPE_FP32", [3, size, size]), "image_embeds": ("TYPE_FP32", [dim])}
    assert io(contract.CLIP_TEXT) == {"input_ids": ("TYPE_INT64", [context]), "text_embeds": ("TYPE_FP32", [dim])}
    assert io(contract.PREPROCESS_IMAGE)["pixel_values"] == ("TYPE_FP32", [3, size, size])
    assert io(contract.TOKENIZE_TEXT)["input_ids"] == ("TYPE_INT64", [context])
    assert io(contract.BLIP_VISION) == {"pixel_values": ("TYPE_FP32", [3, vision.image_size, vision.image_size]),
                                        "image_embeds": ("TYPE_FP32", [tokens, vision.hidden_size])}
    init, step = io(contract.BLIP_DECODER_INIT), io(contract.BLIP_DECODER_STEP)
    assert init["logits"] == step["logits"] == ("TYPE_FP32", [text.vocab_size])
    for layer in range(text.num_hidden_layers):
        for part in ("key", "value"):
            assert init[f"present.{layer}.decoder.{part}"] == ("TYPE_FP32", [heads, -1, head_dim])
            assert init[f"present.{layer}.encoder.{part}"] == ("TYPE_FP32", [heads, tokens, head_dim])
            assert step[f"past_key_values.{layer}.decoder.{part}"] == step[f"present.{layer}.decoder.{part}"]
            assert step[f"past_key_values.{layer}.encoder.{part}"] == ("TYPE_FP32", [heads, tokens, head_dim])
    assert len(init) == 2 + 1 + 4 * text.num_hidden_layers and len(step) == 1 + 4 * text.num_hidden_layers + 1 + 2 * text.num_hidden_layers


@pytest.fixture(scope="module")
def rendered(tiny_repository, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "cpu"
    render_cpu(tiny_repository, out)
    return out


def test_cpu_rendering_keeps_the_topology_on_the_python_backend(rendered, tiny_repository, committed):
    manifest = Manifest.load(tiny_repository)
    configs = repo.load_configs(rendered)
    expected = {n for n in GRAPHS if manifest.has_model(n)} | set(EMBEDDERS) | {contract.PREPROCESS_IMAGE, contract.TOKENIZE_TEXT}
    if manifest.blip is not None:
        expected.add(contract.CAPTION)
    if manifest.has_model(contract.BLIP_ITM):
        expected |= {contract.PREPROCESS_ITM, contract.RERANK}
    assert set(configs) == expected
    assert repo.check_ensembles(configs) == []
    assert repo.check_graph_dims(configs, manifest, [n for n in configs if manifest.has_model(n)]) == []
    for name, config in configs.items():
        if repo.is_ensemble(config):
            assert config.ensemble_scheduling == committed[name].ensemble_scheduling
            if name in EMBEDDERS:  # what the gateway reports as Embed.model
                assert config.parameters[contract.MODEL_PARAMETER].string_value == manifest.clip["arch"]
            continue
        assert config.backend == "python" and not config.HasField("optimization")
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert config.dynamic_batching == committed[name].dynamic_batching
        assert config.parameters["manifest_repository"].string_value == str(tiny_repository.resolve())
        assert (rendered / name / "1" / "model.py").resolve().is_file()
        if manifest.has_model(name):
            assert (rendered / name / "1" / "model.onnx").resolve() == manifest.graph_path(name).resolve()
    embed = manifest.embed_dim
    assert list(configs[contract.EMBED_IMAGE].output[0].dims) == [embed]
    assert list(configs[contract.PREPROCESS_IMAGE].output[0].dims) == [3, *manifest.image_spec("clip").size]
    assert committed[contract.PREPROCESS_IMAGE].parameters["decoder"].string_value == "dali"  # GPU: nvJPEG via DALI
    assert configs[contract.PREPROCESS_IMAGE].parameters["decoder"].string_value == "pil"
    assert not (rendered / "tokenizers").exists()  # Triton would take a folder at the root for a model


def test_cpu_rendering_without_dynamic_batching_and_with_int8(tiny_repository, tmp_path):
    out = tmp_path / "nobatch"
    render_cpu(tiny_repository, out, variant="int8", dynamic_batching=False)
    configs = repo.load_configs(out)
    assert all(c.max_batch_size == 1 and not c.HasField("dynamic_batching") for c in configs.values())
    assert (out / "clip_text" / "1" / "model.onnx").resolve().name == "model.int8.onnx"
    assert json.loads((out / MARKER).read_text())["dynamic_batching"] is False
    render_cpu(tiny_repository, out, queue_delay_us=0)  # an earlier rendering is replaced
    configs = repo.load_configs(out)
    assert configs["clip_text"].max_batch_size == 64
    batching = [c.dynamic_batching for c in configs.values() if c.HasField("dynamic_batching")]
    assert batching and all(b.max_queue_delay_microseconds == 0 and not b.preferred_batch_size for b in batching)


def test_rendering_refuses_to_overwrite_a_foreign_directory(tiny_repository, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(RenderError, match="not rendered by this tool"):
        render_cpu(tiny_repository, tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(RenderError, match="manifest.json"):
        render_cpu(tmp_path / "missing", tmp_path / "out")


def test_render_command_line(tiny_repository, tmp_path, capsys):
    from triton_runner.__main__ import main

    out = tmp_path / "cli"
    assert main(["render", "--source", str(tiny_repository), "--out", str(out), "--no-dynamic-batching"]) == 0
    assert "embed_text" in capsys.readouterr().out
    assert repo.load_configs(out)["embed_text"].max_batch_size == 1
    assert main(["render", "--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "render failed" in capsys.readouterr().err


def test_serve_refuses_an_unrendered_export_in_one_line(tiny_repository, capsys):
    from triton_runner.__main__ import main

    assert main(["serve", "--repository", str(tiny_repository)]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "not rendered" in message
    assert f"python -m triton_runner render --source {tiny_repository} --out build/triton_cpu" in message
