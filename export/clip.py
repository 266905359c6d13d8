"""CLIP image and text encoders (open_clip) -> ONNX graphs that output L2-normalized embeddings."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from export.errors import ExportError
from export.hub import use_cache_only_if_offline
from export.onnx_graphs import compare, export_module, fix_dims, graph_entry
from export.torch_compat import import_open_clip
from export.variants import add_variants
from preprocessing.clip_tokenizer import build_clip_bpe_tokenizer
from preprocessing.hf_tokenizer import KIND as HF_KIND
from preprocessing.text import load_text_tokenizer
from preprocessing.text_cleaning import CLEANERS
from preprocessing.image import ImageSpec, preprocess_images
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, model_file
from export.sample_inputs import sample_images, sample_texts

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
TOKENIZER_FILE = "tokenizers/clip/tokenizer.json"


class NormalizedImageEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(pixel_values), dim=-1)


class NormalizedTextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(input_ids), dim=-1)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


def load_clip(arch: str, pretrained: str | None):
    """open_clip model (eval, fp32, CPU), its eval ImageSpec and its tokenizer."""
    open_clip = import_open_clip()
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    if arch not in open_clip.list_models() and not arch.startswith(("hf-hub:", "local-dir:")):
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ExportError(f"unknown open_clip architecture {arch!r}{hint}; `python -c 'import open_clip; print(open_clip.list_models())'` lists them")
    if pretrained and _looks_like_path(pretrained) and not os.path.isfile(pretrained):
        raise ExportError(f"CLIP checkpoint file {pretrained!r} does not exist; pass an existing .pt/.bin/.safetensors path")
    if pretrained and not _looks_like_path(pretrained) and not open_clip.get_pretrained_cfg(arch, pretrained):
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ExportError(f"open_clip has no pretrained tag {pretrained!r} for {arch}; known tags: {', '.join(tags) or 'none'}; or pass a local checkpoint path")
    offline = use_cache_only_if_offline() if pretrained and not _looks_like_path(pretrained) else False
    try:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except (RuntimeError, OSError) as exc:
        if pretrained and not _looks_like_path(pretrained):
            reason = "the model hub is unreachable and they are not in the local cache" if offline else "download failed"
            raise ExportError(
                f"cannot load open_clip weights {arch}/{pretrained}: {reason}; "
                f"download them elsewhere and pass --clip-pretrained /path/to/open_clip_model.safetensors"
            ) from exc
        raise ExportError(f"cannot load CLIP {arch} from {pretrained!r}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except (OSError, ValueError) as exc:  # a Hugging Face tokenizer comes from the hub (or its cache)
        raise ExportError(
            f"cannot load the tokenizer of {arch}: {str(exc).splitlines()[0]}; it is a Hugging Face tokenizer that comes "
            "from the model hub: run the export once where the hub is reachable (it is cached), or set HF_HUB_OFFLINE=1 with a filled cache"
        ) from exc
    return model, image_spec_from_open_clip(model), tokenizer


def image_spec_from_open_clip(model: torch.nn.Module) -> ImageSpec:
    cfg = model.visual.preprocess_cfg
    size = cfg["size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    return ImageSpec(
        size=size,
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        resize_mode=cfg.get("resize_mode", "shortest"),
        fill_color=int(cfg.get("fill_color", 0)),
    )


def write_clip_tokenizer(reference_tokenizer, staging: Path) -> dict[str, Any]:
    """The model's tokenizer as `tokenizer.json` + its manifest entry, verified id for id against open_clip.

    open_clip's SimpleTokenizer becomes its HF-tokenizers twin (kind `clip_bpe`); an open_clip
    HFTokenizer (SigLIP, xlm-roberta, hf-hub models) is saved as it is (kind `hf`), with what
    open_clip does around it (cleaning, context length, padding, truncation) in the entry.
    """
    open_clip = import_open_clip()
    path = staging / TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(reference_tokenizer, open_clip.tokenizer.SimpleTokenizer):
        entry = _write_clip_bpe(open_clip, reference_tokenizer, path)
    elif isinstance(reference_tokenizer, open_clip.tokenizer.HFTokenizer):
        entry = _write_hf(open_clip, reference_tokenizer, path)
    else:
        raise ExportError(
            f"{type(reference_tokenizer).__name__} tokenizers are not supported; choose an open_clip model whose "
            "tokenizer is open_clip's CLIP BPE (e.g. ViT-B-32) or a Hugging Face tokenizer (SigLIP, xlm-roberta)"
        )
    ours = load_text_tokenizer(staging, entry)
    texts = sample_texts()
    entry["parity_with_open_clip"] = bool(np.array_equal(ours(texts), reference_tokenizer(texts).numpy()))
    if not entry["parity_with_open_clip"]:
        raise ExportError(f"the exported {entry['kind']} tokenizer does not reproduce open_clip's token ids")
    return entry


def _write_clip_bpe(open_clip, reference_tokenizer, path: Path) -> dict[str, Any]:
    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    build_clip_bpe_tokenizer(bpe_path).save(str(path))
    return {
        "file": TOKENIZER_FILE,
        "kind": "clip_bpe",
        "context_length": int(reference_tokenizer.context_length),
        "sot_token_id": int(reference_tokenizer.sot_token_id),
        "eot_token_id": int(reference_tokenizer.eot_token_id),
        "pad_token_id": 0,
        "truncation": "keep the first context_length-1 tokens, EOT last (as open_clip)",
    }


def _clean_name(open_clip, clean_fn) -> str:
    for name in CLEANERS:
        if open_clip.tokenizer.get_clean_fn(name) is clean_fn:
            return name
    raise ExportError(f"open_clip tokenizer cleaning {getattr(clean_fn, '__name__', clean_fn)!r} is not one of {', '.join(CLEANERS)}")


def _write_hf(open_clip, reference_tokenizer, path: Path) -> dict[str, Any]:
    """`HFTokenizer.__call__` = clean, then transformers' fast tokenizer with padding='max_length',
    truncation=True, max_length=context_length (+ zeros where SEP was, with strip_sep_token)."""
    from tokenizers import Tokenizer

    if getattr(reference_tokenizer, "tokenizer_mode", "") not in ("", None):
        raise ExportError(f"open_clip HFTokenizer mode {reference_tokenizer.tokenizer_mode!r} is not supported (only the standard mode)")
    hf = reference_tokenizer.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{type(hf).__name__} has no fast (tokenizers) backend to save as tokenizer.json")
    if hf.pad_token_id is None:
        raise ExportError(f"{type(hf).__name__} has no pad token; open_clip pads to the context length")
    plain = Tokenizer.from_str(backend.to_str())  # padding and truncation are set from the entry when loaded
    plain.no_padding()
    plain.no_truncation()
    plain.save(str(path))
    return {
        "file": TOKENIZER_FILE,
        "kind": HF_KIND,
        "source": type(hf).__name__,
        "context_length": int(reference_tokenizer.context_length),
        "clean": _clean_name(open_clip, reference_tokenizer.clean_fn),
        "pad_token_id": int(hf.pad_token_id),
        "pad_token": str(hf.pad_token),
        "padding_side": str(hf.padding_side),
        "truncation_side": str(getattr(hf, "truncation_side", "right")),
        "strip_sep_token": bool(reference_tokenizer.strip_sep_token),
        "sep_token_id": None if hf.sep_token_id is None else int(hf.sep_token_id),
        "truncation": "special tokens included in context_length, as transformers truncates (open_clip HFTokenizer)",
    }


def _run_torch(module: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(batch)).numpy()


def _parity(
    staging: Path, name: str, module: torch.nn.Module, batches: Sequence[np.ndarray], input_name: str, output_name: str
) -> dict:
    """Worst case over batches of different sizes (exercises the dynamic batch axis)."""
    from export.variants import run_graph

    worst: dict[str, float] = {"max_abs_diff": 0.0, "min_cosine": 1.0}
    for batch in batches:
        got = run_graph(staging / model_file(name), {input_name: batch})
        row = compare({output_name: _run_torch(module, batch)}, got)[output_name]
        worst = {"max_abs_diff": max(worst["max_abs_diff"], row["max_abs_diff"]), "min_cosine": min(worst["min_cosine"], row["min_cosine"])}
    return {output_name: worst}


def _calibration(name: str, input_name: str, spec, tokenizer, batch: int = 8) -> list[dict]:
    """Static-int8 calibration feeds for one tower: real product photos or titles, in batches."""
    from export.calibration import calibration_images, calibration_texts

    data = preprocess_images(calibration_images(), spec) if name == CLIP_IMAGE else tokenizer(calibration_texts())
    return [{input_name: data[i : i + batch]} for i in range(0, len(data), batch)]


def export_clip(
    config: dict[str, Any],
    staging: Path,
    opset: int,
    variants: Sequence[str],
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, dict]]:
    """Export both encoders into `staging`; return the manifest's clip section and model rows."""
    arch, pretrained = config["arch"], config.get("pretrained")
    log(f"clip: loading {arch} ({pretrained or 'random init'})")
    torch.manual_seed(0)
    model, spec, reference_tokenizer = load_clip(arch, pretrained)
    tokenizer_entry = write_clip_tokenizer(reference_tokenizer, staging)
    tokenizer = load_text_tokenizer(staging, tokenizer_entry)

    images = preprocess_images(sample_images(), spec)
    texts = tokenizer(sample_texts())
    image_encoder, text_encoder = NormalizedImageEncoder(model), NormalizedTextEncoder(model)
    embed_dim = int(_run_torch(text_encoder, texts[:1]).shape[-1])
    models: dict[str, dict] = {}
    for name, module, example, input_name, output_name, int8_ops in (
        (CLIP_IMAGE, image_encoder, images, "pixel_values", "image_embeds", ["MatMul"]),
        (CLIP_TEXT, text_encoder, texts, "input_ids", "text_embeds", ["MatMul", "Gather"]),
    ):
        log(f"clip: exporting {name}")
        export_module(
            module,
            (torch.from_numpy(example[:2]),),
            staging / model_file(name),
            [input_name],
            [output_name],
            {input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset,
        )
        fix_dims(staging / model_file(name), {output_name: [-1, embed_dim]})
        parity = _parity(staging, name, module, [example, example[:1]], input_name, output_name)
        models[name] = graph_entry(staging, name, parity=parity, normalized=True, embed_dim=embed_dim)
        if variants:
            log(f"clip: {name} variants {', '.join(variants)}")
            calibration = _calibration(name, input_name, spec, tokenizer) if "int8_static" in variants else None
            models[name]["variants"] = add_variants(staging, name, variants, {input_name: example}, int8_ops, calibration)
    family = {
        "arch": arch,
        "pretrained": pretrained,
        "embed_dim": embed_dim,
        "normalized": True,
        "image": spec.to_dict(),
        "tokenizer": tokenizer_entry,
    }
    return family, models
