"""Hugging Face tokenizers (SigLIP, xlm-roberta, ...) as open_clip's HFTokenizer runs them, without transformers.

Export saves the model's tokenizer as `tokenizer.json` (truncation and padding off) and records in
the manifest what open_clip's `HFTokenizer.__call__` adds around it: the cleaning function, the
context length, `padding='max_length'` and `truncation=True` (with the tokenizer's padding and
truncation sides, special tokens counted in the length), and `strip_sep_token`. The `tokenizers`
library applies the same post-processor (CLS/SEP, EOS) that transformers' fast tokenizer applies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Tokenizer

from preprocessing.clip_tokenizer import MAX_TEXT_CHARS, TextInputError
from preprocessing.text_cleaning import CLEANERS

KIND = "hf"


class HfTextTokenizer:
    """Texts -> int64 [N, context_length] ids, equal to open_clip's HFTokenizer(texts)."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int,
        pad_token_id: int,
        pad_token: str,
        clean: str = "whitespace",
        padding_side: str = "right",
        truncation_side: str = "right",
        strip_sep_token: bool = False,
        sep_token_id: int | None = None,
    ) -> None:
        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r}; one of {', '.join(CLEANERS)}")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=context_length, direction=truncation_side)
        self.tokenizer.enable_padding(direction=padding_side, pad_id=pad_token_id, pad_token=pad_token, length=context_length)
        self.context_length = context_length
        self.pad_token_id = pad_token_id
        self.clean = CLEANERS[clean]
        self.strip_sep_token = strip_sep_token
        self.sep_token_id = sep_token_id

    @classmethod
    def from_manifest_entry(cls, repository: str | Path, entry: dict[str, Any]) -> "HfTextTokenizer":
        return cls(
            Path(repository) / entry["file"],
            context_length=int(entry["context_length"]),
            pad_token_id=int(entry["pad_token_id"]),
            pad_token=entry["pad_token"],
            clean=entry.get("clean", "whitespace"),
            padding_side=entry.get("padding_side", "right"),
            truncation_side=entry.get("truncation_side", "right"),
            strip_sep_token=bool(entry.get("strip_sep_token", False)),
            sep_token_id=entry.get("sep_token_id"),
        )

    def validate(self, text: object) -> str:
        if not isinstance(text, str):
            raise TextInputError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise TextInputError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        cleaned = self.clean(text)
        if not cleaned:
            raise TextInputError("text is empty (after trimming whitespace)" if not text.strip() else "text is empty after cleaning")
        return cleaned

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Long texts are truncated to the context, as open_clip (transformers) does."""
        return self.encode_cleaned([self.validate(text) for text in texts])

    def encode_cleaned(self, cleaned: Sequence[str]) -> np.ndarray:
        """Ids of texts `validate` already cleaned (a batch server validates each request once)."""
        encodings = self.tokenizer.encode_batch(cleaned, add_special_tokens=True)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64).reshape(len(cleaned), self.context_length)
        if self.strip_sep_token and self.sep_token_id is not None:
            ids[ids == self.sep_token_id] = 0  # open_clip writes zeros there, not the pad id
        return ids
