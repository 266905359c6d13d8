"""BLIP captioning (vision encoder + text decoder with KV cache) and ITM (transformers) -> ONNX, with parity.

Graphs (names from runtime.manifest, tensor names from runtime.caption.DecoderSpec):
- blip_vision:        pixel_values [B,3,H,W] -> image_embeds [B,N,D]
- blip_decoder_init:  input_ids [B,T] (prompt, BOS first), image_embeds -> logits of the last position
                      [B,V], self-attention KV per layer, and cross-attention KV per layer (the image
                      projections, computed once instead of at every step)
- blip_decoder_step:  input_ids [B,1], past self KV, cross KV -> logits [B,V], new self KV
- blip_itm:           pixel_values, input_ids, attention_mask -> itm_logits [B,2], itm_score [B]

transformers 5 keeps KV in Cache objects; the wrappers below take and return flat tensors and build
the EncoderDecoderCache inside, so the traced graphs are plain tensor programs. No attention mask
enters the decoder graphs: the prompt is shared by the batch (no padding), and transformers'
generate() passes an all-ones mask in that case, which equals the causal mask built in-graph.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from export.errors import ExportError
from export.onnx_graphs import compare, export_module, fix_dims, graph_entry
from export.sample_inputs import sample_images, sample_texts
from export.torch_compat import install_torchvision_shim
from export.variants import add_variants, run_graph
from preprocessing.blip_tokenizer import DEFAULT_ITM_MAX_LENGTH, BlipTokenizer
from preprocessing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageSpec, preprocess_images
from runtime.caption import DecoderSpec, beam_search, greedy_search, ort_runner
from runtime.manifest import BLIP_DECODER_INIT, BLIP_DECODER_STEP, BLIP_ITM, BLIP_VISION, model_file
from runtime.sessions import create_session

TOKENIZER_FILE = "tokenizers/blip/tokenizer.json"
TINY_VOCAB = Path(__file__).parent / "data" / "tiny_blip_vocab.txt"
DEFAULT_PROMPT = "a picture of"
DEFAULT_MAX_NEW_TOKENS = 30
PARITY_BEAMS = 3
_RESAMPLE_NAMES = {2: "bilinear", 3: "bicubic"}  # PIL / transformers PILImageResampling values


@dataclass
class LoadedBlip:
    """The torch side of one export: models in eval mode, tokenizer and image preprocessing."""

    captioner: Any  # BlipForConditionalGeneration
    itm: Any | None  # BlipForImageTextRetrieval
    tokenizer: Any  # transformers BertTokenizer with [DEC]/[ENC]
    image_spec: ImageSpec
    itm_image_spec: ImageSpec | None
    checkpoint: str
    itm_checkpoint: str | None


# -- loading ------------------------------------------------------------------------------------

def build_tiny_tokenizer():
    """BERT-style WordPiece tokenizer over a few hundred words (export/data), plus BLIP's [DEC] and [ENC]."""
    install_torchvision_shim()
    from transformers import BertTokenizer

    vocab = [line.rstrip("\n") for line in TINY_VOCAB.read_text(encoding="utf-8").splitlines() if line.strip()]
    return BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, bos_token="[DEC]", extra_special_tokens=["[ENC]"])


def _special_ids(tokenizer) -> dict[str, int]:
    """A BLIP tokenizer's ids in BlipTextConfig terms: [DEC] starts captions, [SEP] ends them."""
    return {
        "bos_token_id": int(tokenizer.bos_token_id),
        "eos_token_id": int(tokenizer.sep_token_id),
        "sep_token_id": int(tokenizer.sep_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
    }


def _generation_ids(text_config, tokenizer, name: str) -> dict[str, int]:
    """The ids generate() uses (the model config's), refused when the tokenizer disagrees on EOS/padding."""
    ids = {
        "bos_token_id": int(text_config.bos_token_id),
        "eos_token_id": int(text_config.sep_token_id),
        "sep_token_id": int(text_config.sep_token_id),
        "pad_token_id": int(text_config.pad_token_id),
    }
    if (tokenizer.sep_token_id, tokenizer.pad_token_id) != (ids["sep_token_id"], ids["pad_token_id"]):
        raise ExportError(
            f"the tokenizer of {name!r} ([SEP]={tokenizer.sep_token_id}, [PAD]={tokenizer.pad_token_id}) does not match "
            f"its model config (sep_token_id={ids['sep_token_id']}, pad_token_id={ids['pad_token_id']})"
        )
    if len(tokenizer) > int(text_config.vocab_size):
        raise ExportError(f"the tokenizer of {name!r} has {len(tokenizer)} tokens, more than the model's vocab_size {text_config.vocab_size}")
    return ids


def build_tiny_models(section: Mapping[str, Any]) -> LoadedBlip:
    """Random but seeded BLIP captioner (+ ITM) from a small BlipConfig; vocabulary ids from the tiny tokenizer."""
    install_torchvision_shim()
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval

    if section.get("tokenizer", "tiny") != "tiny":
        raise ExportError(f"blip.tokenizer {section.get('tokenizer')!r} is not supported with blip.config; use \"tiny\"")
    tokenizer = build_tiny_tokenizer()
    kwargs = dict(section["config"])
    text_config = {**kwargs.pop("text_config", {}), **_special_ids(tokenizer), "vocab_size": len(tokenizer)}
    seed = int(section.get("seed", 0))
    try:
        config = BlipConfig(text_config=text_config, vision_config=kwargs.pop("vision_config", {}), **kwargs)
        torch.manual_seed(seed)
        captioner = BlipForConditionalGeneration(config).eval()
        itm = None
        if section.get("itm", True):
            torch.manual_seed(seed + 1)
            itm = BlipForImageTextRetrieval(config).eval()
    except (TypeError, ValueError) as exc:
        raise ExportError(f"invalid blip.config in the preset: {_first_line(exc)}") from exc
    size = int(config.vision_config.image_size)
    spec = ImageSpec(size=(size, size), resize_mode="squash")
    return LoadedBlip(captioner, itm, tokenizer, spec, spec if itm is not None else None, "tiny (random init)", None)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _looks_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1


def _from_pretrained(loader: Callable[..., Any], name: str, what: str, flag: str) -> Any:
    """`loader(name)` with one clear ExportError line when the checkpoint is neither local nor downloadable."""
    install_torchvision_shim()
    if _looks_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ExportError(f"cannot load {what} {name!r}: no such directory; pass {flag} /path/to/a/directory/saved/with/save_pretrained")
        try:
            return loader(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot load {what} from {name!r}: {_first_line(exc)}") from exc
    from export.hub import hub_reachable

    offline = not hub_reachable()
    try:
        return loader(name, local_files_only=offline)
    except (OSError, ValueError) as exc:
        reason = "the model hub is unreachable and it is not in the local cache" if offline else _first_line(exc)
        raise ExportError(
            f"cannot load {what} {name!r}: {reason}; it is not a local directory either; pass {flag} /path/to/local/dir"
        ) from exc


def _image_spec(processor: Any | None, image_size: int) -> ImageSpec:
    """BLIP's processor (squash-resize, rescale, normalize) as an ImageSpec; defaults when the checkpoint has none."""
    if processor is None:
        return ImageSpec(size=(image_size, image_size), resize_mode="squash")
    size = processor.size
    height, width = (size, size) if isinstance(size, int) else (size["height"], size["width"])
    resample = int(getattr(processor, "resample", 3))
    if resample not in _RESAMPLE_NAMES:
        raise ExportError(f"BLIP image processor resample={resample} is not supported (bicubic or bilinear only)")
    steps = (processor.do_resize, processor.do_rescale, processor.do_normalize)
    if not all(steps) or abs(float(processor.rescale_factor) - 1 / 255) > 1e-12:
        raise ExportError("only BLIP image processors that resize, rescale by 1/255 and normalize are supported")
    return ImageSpec(
        size=(int(height), int(width)),
        mean=tuple(float(x) for x in (processor.image_mean or OPENAI_CLIP_MEAN)),
        std=tuple(float(x) for x in (processor.image_std or OPENAI_CLIP_STD)),
        interpolation=_RESAMPLE_NAMES[resample],
        resize_mode="squash",
    )


def _load_image_processor(name: str, log: Callable[[str], None]) -> Any | None:
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    try:
        return _from_pretrained(BlipImageProcessorPil.from_pretrained, name, "BLIP image processor", "--blip-checkpoint")
    except ExportError as exc:
        log(f"blip: no image processor config with {name!r} ({exc}); using BLIP's defaults")
        return None


def load_pretrained(section: Mapping[str, Any], log: Callable[[str], None]) -> LoadedBlip:
    install_torchvision_shim()
    from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipForImageTextRetrieval

    name = str(section["checkpoint"])
    captioner = _from_pretrained(BlipForConditionalGeneration.from_pretrained, name, "BLIP checkpoint", "--blip-checkpoint").eval()
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name, "BLIP tokenizer", "--blip-checkpoint")
    if tokenizer.sep_token_id is None or tokenizer.cls_token_id is None:
        raise ExportError(f"the tokenizer of {name!r} is not a BERT/BLIP tokenizer (no [CLS]/[SEP])")
    _generation_ids(captioner.config.text_config, tokenizer, name)
    spec = _image_spec(_load_image_processor(name, log), captioner.config.vision_config.image_size)
    itm_name = section.get("itm_checkpoint")
    itm, itm_spec = None, None
    if itm_name:
        itm = _from_pretrained(BlipForImageTextRetrieval.from_pretrained, str(itm_name), "BLIP ITM checkpoint", "--blip-itm-checkpoint").eval()
        if len(tokenizer) > int(itm.config.text_config.vocab_size):
            raise ExportError(f"the ITM checkpoint {itm_name!r} has a smaller vocabulary than the tokenizer of {name!r}")
        itm_spec = _image_spec(_load_image_processor(str(itm_name), log), itm.config.vision_config.image_size)
    return LoadedBlip(captioner, itm, tokenizer, spec, itm_spec, name, str(itm_name) if itm_name else None)


def load_blip(section: Mapping[str, Any], log: Callable[[str], None] = print) -> LoadedBlip:
    if section.get("config") is not None:
        return build_tiny_models(section)
    if not section.get("checkpoint"):
        raise ExportError("the preset's blip section needs either \"config\" (tiny random model) or \"checkpoint\"")
    return load_pretrained(section, log)


# -- graph wrappers -------------------------------------------------------------------------------

class VisionGraph(torch.nn.Module):
    def __init__(self, vision_model: torch.nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


def _flat_cache(cache) -> list[torch.Tensor]:
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


class DecoderInitGraph(torch.nn.Module):
    """Prompt pass: last-position logits + self KV + cross KV (the step graph reuses the latter as is)."""

    def __init__(self, text_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_decoder = text_decoder

    def forward(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = self.text_decoder(
            input_ids=input_ids, encoder_hidden_states=image_embeds, cache=cache, use_cache=True, logits_to_keep=1, return_dict=True
        )
        self_kv, cross_kv = _flat_cache(out.cache.self_attention_cache), _flat_cache(out.cache.cross_attention_cache)
        flat: list[torch.Tensor] = [out.logits[:, -1, :]]
        for layer in range(len(self_kv) // 2):
            flat += [self_kv[2 * layer], self_kv[2 * layer + 1], cross_kv[2 * layer], cross_kv[2 * layer + 1]]
        return tuple(flat)


class DecoderStepGraph(torch.nn.Module):
    """One token: inputs ordered as DecoderSpec.step_inputs (input_ids, then per layer self k/v, cross k/v)."""

    def __init__(self, text_decoder: torch.nn.Module) -> None:
        super().__init__()
        self.text_decoder = text_decoder
        self.encoder_hidden_size = int(text_decoder.config.encoder_hidden_size)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache, EncoderDecoderCache

        layers = len(past) // 4
        self_kv = [(past[4 * i], past[4 * i + 1]) for i in range(layers)]
        cross_kv = [(past[4 * i + 2], past[4 * i + 3]) for i in range(layers)]
        cache = EncoderDecoderCache(DynamicCache(self_kv), DynamicCache(cross_kv))
        # Cross-attention reads its keys/values from the cache (is_updated); the encoder states only
        # switch it on and are never read, so an empty tensor stands in for them.
        placeholder = torch.zeros(1, 0, self.encoder_hidden_size, dtype=past[0].dtype)
        out = self.text_decoder(
            input_ids=input_ids, encoder_hidden_states=placeholder, cache=cache, use_cache=True, logits_to_keep=1, return_dict=True
        )
        return (out.logits[:, -1, :], *_flat_cache(out.cache.self_attention_cache))


class ItmGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, use_itm_head=True).itm_score
        return logits, torch.softmax(logits, dim=-1)[:, 1]


def decoder_spec(text_decoder: torch.nn.Module) -> DecoderSpec:
    config = text_decoder.config
    return DecoderSpec(
        num_layers=int(config.num_hidden_layers),
        num_heads=int(config.num_attention_heads),
        head_dim=int(config.hidden_size // config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size),
    )


def _torch_outputs(module: torch.nn.Module, names: Sequence[str], feeds: Mapping[str, np.ndarray], order: Sequence[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(feeds[name]) for name in order))
    out = out if isinstance(out, tuple) else (out,)
    return {name: tensor.numpy() for name, tensor in zip(names, out)}


def _worst(rows: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    worst: dict[str, dict[str, float]] = {}
    for row in rows:
        for name, item in row.items():
            seen = worst.setdefault(name, {"max_abs_diff": 0.0, "min_cosine": 1.0})
            seen["max_abs_diff"] = max(seen["max_abs_diff"], item["max_abs_diff"])
            seen["min_cosine"] = min(seen["min_cosine"], item["min_cosine"])
    return worst


# -- export -----------------------------------------------------------------------------------------

def write_tokenizer(tokenizer, staging: Path, generation_ids: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Save the checkpoint's tokenizer, keep its tokenizer.json (all the runtime reads) + ids in the manifest.

    `generation_ids` (the model config's BOS/EOS/PAD, which generate() uses) take precedence over the tokenizer's.
    """
    target = staging / TOKENIZER_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        shutil.copyfile(Path(scratch) / "tokenizer.json", target)
    return {
        "file": TOKENIZER_FILE,
        "kind": "bert_wordpiece",
        **_special_ids(tokenizer),
        **(generation_ids or {}),
        "cls_token_id": int(tokenizer.cls_token_id),
        "enc_token_id": int(tokenizer.convert_tokens_to_ids("[ENC]")),
        "vocab_size": len(tokenizer),
        "clean_up_tokenization_spaces": bool(getattr(tokenizer, "clean_up_tokenization_spaces", False)),
        "itm_max_length": DEFAULT_ITM_MAX_LENGTH,
    }


def _check_generation_config(captioner, log: Callable[[str], None]) -> dict[str, Any]:
    """Settings the ONNX decoding reproduces; anything else in the checkpoint's generation config is reported."""
    config = captioner.text_decoder.generation_config
    unsupported = {
        key: getattr(config, key, None)
        for key, neutral in (
            ("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0), ("min_length", 0), ("min_new_tokens", None),
            ("bad_words_ids", None), ("forced_bos_token_id", None), ("forced_eos_token_id", None), ("encoder_repetition_penalty", 1.0),
        )
        if getattr(config, key, neutral) not in (neutral, None)
    }
    if unsupported:
        log(f"blip: generation settings not reproduced by the ONNX decoder (caption ids may differ): {unsupported}")
    return {"length_penalty": float(config.length_penalty or 1.0), "early_stopping": config.early_stopping or False, "ignored": unsupported}


def _sessions(staging: Path, variant: str):
    return {
        name: create_session(staging / model_file(name, variant), providers=["CPUExecutionProvider"])
        for name in (BLIP_VISION, BLIP_DECODER_INIT, BLIP_DECODER_STEP)
    }


def _export_vision(vision_model, pixels: np.ndarray, staging: Path, opset: int) -> tuple[dict, np.ndarray]:
    """blip_vision; parity over two batch sizes. Returns its manifest row and torch's image_embeds of `pixels`."""
    vision = VisionGraph(vision_model).eval()
    path = staging / model_file(BLIP_VISION)
    export_module(vision, (torch.from_numpy(pixels[:2]),), path, ["pixel_values"], ["image_embeds"],
                  {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, opset)
    image_embeds = _torch_outputs(vision, ["image_embeds"], {"pixel_values": pixels}, ["pixel_values"])["image_embeds"]
    fix_dims(path, {"image_embeds": [-1, *image_embeds.shape[1:]]})
    rows = []
    for batch in (pixels, pixels[:1]):
        feeds = {"pixel_values": batch}
        rows.append(compare(_torch_outputs(vision, ["image_embeds"], feeds, ["pixel_values"]), run_graph(path, feeds)))
    return graph_entry(staging, BLIP_VISION, parity=_worst(rows)), image_embeds


def _export_decoder(text_decoder, spec: DecoderSpec, input_ids: np.ndarray, image_embeds: np.ndarray, staging: Path,
                    opset: int) -> tuple[dict[str, dict], dict[str, dict[str, np.ndarray]]]:
    """blip_decoder_init and blip_decoder_step (traced at past length = prompt length; the axis is dynamic)."""
    # The image token count is fixed by the vision config: only batch and text length are dynamic.
    kv_dims = [-1, spec.num_heads, -1, spec.head_dim]
    cross_dims = [-1, spec.num_heads, int(image_embeds.shape[1]), spec.head_dim]
    init_axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"}, "image_embeds": {0: "batch"}, "logits": {0: "batch"}}
    dims: dict[str, list[int]] = {"logits": [-1, spec.vocab_size]}
    step_axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch"}, "logits": {0: "batch"}}
    for layer in range(spec.num_layers):
        for past, present in zip(spec.self_past(layer), spec.self_present(layer)):
            init_axes[present] = step_axes[present] = {0: "batch", 2: "sequence"}
            step_axes[past] = {0: "batch", 2: "past_sequence"}
            dims[present] = kv_dims
        for past, present in zip(spec.cross_past(layer), spec.cross_present(layer)):
            init_axes[present] = step_axes[past] = {0: "batch"}
            dims[present] = cross_dims

    init = DecoderInitGraph(text_decoder).eval()
    init_path = staging / model_file(BLIP_DECODER_INIT)
    init_feeds = {"input_ids": input_ids, "image_embeds": image_embeds}
    export_module(init, (torch.from_numpy(input_ids[:2]), torch.from_numpy(image_embeds[:2])), init_path,
                  spec.init_inputs(), spec.init_outputs(), init_axes, opset)
    fix_dims(init_path, dims)
    init_torch = _torch_outputs(init, spec.init_outputs(), init_feeds, spec.init_inputs())
    rows = {BLIP_DECODER_INIT: graph_entry(staging, BLIP_DECODER_INIT, parity=compare(init_torch, run_graph(init_path, init_feeds)))}

    # One step after the prompt: past = the prompt's KV, next token = the argmax.
    step = DecoderStepGraph(text_decoder).eval()
    step_path = staging / model_file(BLIP_DECODER_STEP)
    step_feeds = {"input_ids": np.argmax(init_torch["logits"], axis=-1).astype(np.int64)[:, None]}
    for layer in range(spec.num_layers):
        for past, present in (*zip(spec.self_past(layer), spec.self_present(layer)), *zip(spec.cross_past(layer), spec.cross_present(layer))):
            step_feeds[past] = init_torch[present]
    export_module(step, tuple(torch.from_numpy(step_feeds[n][:2]) for n in spec.step_inputs()), step_path,
                  spec.step_inputs(), spec.step_outputs(), step_axes, opset)
    fix_dims(step_path, {name: dims[name] for name in spec.step_outputs()})
    step_torch = _torch_outputs(step, spec.step_outputs(), step_feeds, spec.step_inputs())
    rows[BLIP_DECODER_STEP] = graph_entry(staging, BLIP_DECODER_STEP, parity=compare(step_torch, run_graph(step_path, step_feeds)))
    return rows, {BLIP_DECODER_INIT: init_feeds, BLIP_DECODER_STEP: step_feeds}


def _export_itm(itm_model, pixels: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray, staging: Path,
                opset: int) -> tuple[dict, dict[str, np.ndarray]]:
    """blip_itm; parity on a padded batch and on one unpadded row (another text length)."""
    itm = ItmGraph(itm_model).eval()
    path = staging / model_file(BLIP_ITM)
    order, outputs = ["pixel_values", "input_ids", "attention_mask"], ["itm_logits", "itm_score"]
    feeds = {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": attention_mask}
    axes = {"pixel_values": {0: "batch"}, "input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "itm_logits": {0: "batch"}, "itm_score": {0: "batch"}}
    export_module(itm, tuple(torch.from_numpy(feeds[n][:2]) for n in order), path, order, outputs, axes, opset)
    length = int(attention_mask[0].sum())
    single = {"pixel_values": pixels[:1], "input_ids": input_ids[:1, :length], "attention_mask": attention_mask[:1, :length]}
    rows = [compare(_torch_outputs(itm, outputs, batch, order), run_graph(path, batch)) for batch in (feeds, single)]
    return graph_entry(staging, BLIP_ITM, parity=_worst(rows)), feeds


def export_blip(
    config: dict[str, Any],
    staging: Path,
    opset: int,
    variants: Sequence[str],
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Export BLIP graphs into `staging`; return the manifest's blip section and the model rows."""
    started = time.perf_counter()
    loaded = load_blip(config, log)
    log(f"blip: loaded {loaded.checkpoint} in {time.perf_counter() - started:.1f} s")
    captioner, text_decoder = loaded.captioner, loaded.captioner.text_decoder
    spec = decoder_spec(text_decoder)
    prompt = config.get("prompt", DEFAULT_PROMPT) or ""
    max_new_tokens = int(config.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    generation_ids = _generation_ids(text_decoder.config, loaded.tokenizer, loaded.checkpoint)
    tokenizer_entry = write_tokenizer(loaded.tokenizer, staging, generation_ids)
    tokenizer = BlipTokenizer.from_manifest_entry(staging, tokenizer_entry)
    prompt_ids, _ = tokenizer.encode_prompt([prompt])
    if prompt_ids.shape[1] + max_new_tokens > text_decoder.config.max_position_embeddings:
        raise ExportError(
            f"prompt ({prompt_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceed the decoder's "
            f"{text_decoder.config.max_position_embeddings} positions; lower blip.max_new_tokens"
        )
    generation = _check_generation_config(captioner, log)

    pixels = preprocess_images(sample_images(3), loaded.image_spec)
    log(f"blip: exporting {BLIP_VISION}")
    models: dict[str, dict] = {}
    models[BLIP_VISION], image_embeds = _export_vision(captioner.vision_model, pixels, staging, opset)
    parity_feeds: dict[str, dict[str, np.ndarray]] = {BLIP_VISION: {"pixel_values": pixels}}
    num_image_tokens, encoder_hidden_size = int(image_embeds.shape[1]), int(image_embeds.shape[2])
    log(f"blip: exporting {BLIP_DECODER_INIT} and {BLIP_DECODER_STEP}")
    decoder_rows, decoder_feeds = _export_decoder(text_decoder, spec, np.repeat(prompt_ids, len(pixels), axis=0), image_embeds, staging, opset)
    models.update(decoder_rows)
    parity_feeds.update(decoder_feeds)
    itm_entry = None
    if loaded.itm is not None:
        log(f"blip: exporting {BLIP_ITM}")
        itm_pixels = preprocess_images(sample_images(3), loaded.itm_image_spec)
        itm_ids, itm_mask = tokenizer.encode_for_itm(sample_texts()[:3], DEFAULT_ITM_MAX_LENGTH)
        models[BLIP_ITM], parity_feeds[BLIP_ITM] = _export_itm(loaded.itm, itm_pixels, itm_ids, itm_mask, staging, opset)
        itm_entry = {"checkpoint": loaded.itm_checkpoint or loaded.checkpoint, "image": loaded.itm_image_spec.to_dict(),
                     "max_length": DEFAULT_ITM_MAX_LENGTH, "score": "softmax(itm_logits)[:, 1], the probability that text and image match"}

    # Captions: ONNX decoding vs transformers' generate() on the same pixels.
    log("blip: caption parity (greedy and beam search vs generate())")
    caption_parity = caption_agreement(loaded, staging, spec, pixels, prompt, max_new_tokens, tokenizer, generation)

    variants = [v for v in variants if v != "int8_static"]  # CLIP only: BLIP's decoder has no calibration set here
    if variants:
        log(f"blip: variants {', '.join(variants)}")
        for name, feeds in parity_feeds.items():
            models[name]["variants"] = add_variants(staging, name, variants, feeds, ["MatMul"])
        if "int8" in variants:
            caption_parity["int8"] = variant_caption_agreement(staging, "int8", spec, pixels, prompt_ids[0], max_new_tokens, tokenizer)

    family = {
        "checkpoint": loaded.checkpoint,
        "image": loaded.image_spec.to_dict(),
        "tokenizer": tokenizer_entry,
        "prompt": prompt,
        "prompt_ids": prompt_ids[0].tolist(),
        "max_new_tokens": max_new_tokens,
        "generation": {k: v for k, v in generation.items() if k != "ignored"},
        "decoder": {**spec.to_dict(), "num_image_tokens": num_image_tokens, "encoder_hidden_size": encoder_hidden_size,
                    "max_positions": int(text_decoder.config.max_position_embeddings)},
        "caption_parity": caption_parity,
        "itm": itm_entry,
    }
    log(f"blip: done in {time.perf_counter() - started:.1f} s")
    return family, models


def caption_agreement(loaded: LoadedBlip, staging: Path, spec: DecoderSpec, pixels: np.ndarray, prompt: str,
                      max_new_tokens: int, tokenizer: BlipTokenizer, generation: Mapping[str, Any]) -> dict[str, Any]:
    """Greedy and beam ids from the ONNX graphs vs `generate()` fed as the HF processor feeds it."""
    sessions = _sessions(staging, "fp32")
    image_embeds = sessions[BLIP_VISION].run(["image_embeds"], {"pixel_values": pixels})[0]
    run_init, run_step = ort_runner(sessions[BLIP_DECODER_INIT]), ort_runner(sessions[BLIP_DECODER_STEP])
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    prompt_ids = tokenizer.encode_prompt([prompt])[0][0]
    torch_ids = {}
    for beams in (1, PARITY_BEAMS):
        # generate() swaps [CLS] for BOS and drops the trailing [SEP] of the processor's ids itself.
        text = loaded.tokenizer([prompt] * len(pixels), return_tensors="pt")
        with torch.no_grad():
            torch_ids[beams] = loaded.captioner.generate(
                torch.from_numpy(pixels), input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                max_new_tokens=max_new_tokens, num_beams=beams, do_sample=False,
            ).tolist()
    torch_greedy, torch_beam = torch_ids[1], torch_ids[PARITY_BEAMS]
    onnx_greedy = greedy_search(run_init, run_step, spec, image_embeds, prompt_ids, max_new_tokens, **ids)
    onnx_beam, _ = beam_search(run_init, run_step, spec, image_embeds, prompt_ids, max_new_tokens, PARITY_BEAMS,
                               length_penalty=generation["length_penalty"], early_stopping=generation["early_stopping"], **ids)
    return {
        "images": len(pixels),
        "greedy_ids_equal": onnx_greedy.tolist() == torch_greedy,
        "onnx_ids": onnx_greedy.tolist(),
        "torch_ids": torch_greedy,
        "onnx_captions": tokenizer.decode_batch(onnx_greedy),
        "beam_size": PARITY_BEAMS,
        "beam_ids_equal": onnx_beam.tolist() == torch_beam,
        "onnx_beam_ids": onnx_beam.tolist(),
        "torch_beam_ids": torch_beam,
    }


def variant_caption_agreement(staging: Path, variant: str, spec: DecoderSpec, pixels: np.ndarray, prompt_ids: np.ndarray,
                              max_new_tokens: int, tokenizer: BlipTokenizer) -> dict[str, Any]:
    """Informational: greedy ids of a reduced-precision variant vs fp32 ONNX (token agreement up to the first difference)."""
    ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    results = {}
    for name in ("fp32", variant):
        sessions = _sessions(staging, name)
        embeds = sessions[BLIP_VISION].run(["image_embeds"], {"pixel_values": pixels})[0]
        results[name] = greedy_search(ort_runner(sessions[BLIP_DECODER_INIT]), ort_runner(sessions[BLIP_DECODER_STEP]), spec, embeds,
                                      prompt_ids, max_new_tokens, **ids).tolist()
    prefix = len(prompt_ids)
    agree = []
    for ref, got in zip(results["fp32"], results[variant]):
        same = 0
        for a, b in zip(ref[prefix:], got[prefix:]):
            if a != b:
                break
            same += 1
        agree.append(same / max(1, len(ref) - prefix))
    return {"greedy_ids_equal_fp32": results["fp32"] == results[variant], "mean_prefix_agreement": float(np.mean(agree)), "ids": results[variant]}
