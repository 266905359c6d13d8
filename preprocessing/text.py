"""The text tokenizer a manifest entry describes: open_clip's CLIP BPE or a Hugging Face tokenizer.json.

One loader for every consumer (the local backend, Triton's tokenize_text, export's parity checks),
so a model's texts are tokenized by one code path wherever they run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from preprocessing import hf_tokenizer
from preprocessing.clip_tokenizer import ClipTokenizer


class TextTokenizer(Protocol):
    context_length: int

    def validate(self, text: object) -> str: ...
    def encode_cleaned(self, cleaned: Sequence[str]) -> np.ndarray: ...
    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


def load_text_tokenizer(repository: str | Path, entry: dict[str, Any]) -> TextTokenizer:
    kind = entry.get("kind", "clip_bpe")
    if kind == "clip_bpe":
        return ClipTokenizer.from_manifest_entry(repository, entry)
    if kind == hf_tokenizer.KIND:
        return hf_tokenizer.HfTextTokenizer.from_manifest_entry(repository, entry)
    raise ValueError(f"unknown tokenizer kind {kind!r} in the manifest (clip_bpe or {hf_tokenizer.KIND})")
