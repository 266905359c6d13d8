"""Names and helpers of the Triton contract: model and tensor names, and what every python model shares.

Used by model_repository's configs (checked by tests), its python models, the Triton CPU rendering
and the gateway's Triton backend. The served python models import only `preprocessing/` and
`runtime/`, so nothing here touches `pb_utils` (testable without Triton).

The python models read constants from the export manifest. In the committed repository the manifest
sits at the repository root (the parent of `args["model_repository"]`); a rendered repository points
at the exported one with the `manifest_repository` config parameter instead, because a `tokenizers/`
folder at a Triton repository root would be taken for a model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtime.manifest import (  # noqa: F401  (re-exported: the graph models are Triton models too)
    BLIP_DECODER_INIT,
    BLIP_DECODER_STEP,
    BLIP_ITM,
    BLIP_VISION,
    CLIP_IMAGE,
    CLIP_TEXT,
    Manifest,
)

# Python models
PREPROCESS_IMAGE = "preprocess_image"  # JPEG/PNG bytes -> CLIP pixel tensor
TOKENIZE_TEXT = "tokenize_text"  # UTF-8 string -> CLIP token ids
PREPROCESS_ITM = "preprocess_itm"  # (image bytes, text) pairs -> BLIP ITM pixels, ids, mask

# Ensembles and BLS models the gateway calls
EMBED_IMAGE = "embed_image"  # IMAGE_BYTES -> EMBEDDING
EMBED_TEXT = "embed_text"  # TEXT -> EMBEDDING
CAPTION = "caption"  # IMAGE_BYTES -> CAPTION (BLS: blip_vision + decoder loop with KV cache)
RERANK = "rerank"  # (IMAGE_BYTES, TEXT) pairs -> SCORE (preprocess_itm -> blip_itm)

# Tensor names at the gateway-facing boundary (TYPE_STRING tensors carry bytes / UTF-8 text)
IMAGE_BYTES = "IMAGE_BYTES"
TEXT = "TEXT"
EMBEDDING = "EMBEDDING"
CAPTION_TEXT = "CAPTION"
SCORE = "SCORE"
# Inner tensor names (graph inputs/outputs as exported)
PIXEL_VALUES = "pixel_values"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
IMAGE_EMBEDS = "image_embeds"
ITM_SCORE = "itm_score"

# Config parameters
MANIFEST_PARAMETER = "manifest_repository"  # python models: where the export's manifest.json is
MODEL_PARAMETER = "model"  # embed_* ensembles: the CLIP architecture, reported by Embed.model


def parameter(model_config: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A `parameters { key: ... value: { string_value: ... } }` entry of a model config."""
    value = model_config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


def load_manifest(args: dict[str, str]) -> Manifest:
    """The manifest of the export a python model serves (from its `initialize` args)."""
    config = json.loads(args["model_config"])
    root = parameter(config, MANIFEST_PARAMETER) or str(Path(args["model_repository"]).parent)
    return Manifest.load(root)


def rows(array: np.ndarray) -> list[bytes]:
    """The items of a TYPE_STRING tensor of shape [B] or [B, 1], as bytes."""
    return [item if isinstance(item, bytes) else bytes(item) for item in np.asarray(array, dtype=object).reshape(-1)]


def decode_utf8(blobs: Sequence[bytes]) -> list[str]:
    """UTF-8 texts of a TEXT tensor; bytes that are not UTF-8 are the caller's error."""
    from preprocessing.clip_tokenizer import TextInputError

    texts = []
    for blob in blobs:
        try:
            texts.append(blob.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TextInputError(f"text is not valid UTF-8: {exc}") from None
    return texts


def string_tensor(values: Sequence[str]) -> np.ndarray:
    """[B, 1] object array of UTF-8 bytes: the shape a `dims: [1]` TYPE_STRING output has."""
    return np.array([[value.encode("utf-8")] for value in values], dtype=object).reshape(len(values), 1)
