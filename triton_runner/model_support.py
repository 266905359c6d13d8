"""Helpers the repository's python models share (no pb_utils here, so they are testable without Triton).

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

from runtime.manifest import Manifest

MANIFEST_PARAMETER = "manifest_repository"


def parameter(model_config: dict[str, Any], key: str, default: str | None = None) -> str | None:
    """A `parameters { key: ... value: { string_value: ... } }` entry of a model config."""
    value = model_config.get("parameters", {}).get(key, {}).get("string_value")
    return value if value not in (None, "") else default


def load_manifest(args: dict[str, str]) -> Manifest:
    config = json.loads(args["model_config"])
    root = parameter(config, MANIFEST_PARAMETER) or str(Path(args["model_repository"]).parent)
    return Manifest.load(root)


def rows(array: np.ndarray) -> list[bytes]:
    """The items of a TYPE_STRING tensor of shape [B] or [B, 1], as bytes."""
    return [item if isinstance(item, bytes) else bytes(item) for item in np.asarray(array, dtype=object).reshape(-1)]


def decode_utf8(blobs: Sequence[bytes]) -> list[str]:
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
