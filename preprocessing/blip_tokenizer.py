"""BLIP tokenization without transformers: the checkpoint's BERT WordPiece `tokenizer.json` on HF `tokenizers`.

BLIP's vocabulary is BERT's plus `[DEC]` (BOS of the caption decoder) and `[ENC]`. Export saves the
checkpoint's tokenizer as `tokenizer.json` and records the special ids in the manifest; this module
reproduces what transformers feeds the models and how it decodes:
- captioning prompt: the processor's `[CLS] prompt [SEP]`, then `generate()` puts BOS in place of
  `[CLS]` and drops the last column (the `[SEP]`);
- ITM: the processor's `[CLS] text [SEP]` as is (transformers' BlipForImageTextRetrieval does not
  swap in `[ENC]`), truncated to `max_length`, padded to the longest;
- decode: `tokenizer.decode(ids, skip_special_tokens=True)`, including transformers' optional
  `clean_up_tokenization_spaces` pass (off for BERT tokenizers in transformers 5 unless configured).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Tokenizer

from preprocessing.clip_tokenizer import MAX_TEXT_CHARS, TextInputError

DEFAULT_ITM_MAX_LENGTH = 35  # BLIP's ITM text length


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization` (spaces before punctuation and English contractions)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class BlipTokenizer:
    """Prompt / ITM encoding and caption decoding for the exported BLIP graphs."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        bos_token_id: int,
        eos_token_id: int,
        pad_token_id: int,
        cls_token_id: int,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id  # BLIP stops captions at [SEP]
        self.pad_token_id = pad_token_id
        self.cls_token_id = cls_token_id
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces

    @classmethod
    def from_manifest_entry(cls, repository: str | Path, entry: dict[str, Any]) -> "BlipTokenizer":
        return cls(
            Path(repository) / entry["file"],
            bos_token_id=int(entry["bos_token_id"]),
            eos_token_id=int(entry["eos_token_id"]),
            pad_token_id=int(entry["pad_token_id"]),
            cls_token_id=int(entry["cls_token_id"]),
            clean_up_tokenization_spaces=bool(entry.get("clean_up_tokenization_spaces", False)),
        )

    @staticmethod
    def _check(text: object, allow_empty: bool) -> str:
        if not isinstance(text, str):
            raise TextInputError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise TextInputError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        if not allow_empty and not text.strip():
            raise TextInputError("text is empty (after trimming whitespace)")
        return text

    def _pieces(self, texts: Sequence[str], allow_empty: bool) -> list[list[int]]:
        checked = [self._check(text, allow_empty) for text in texts]
        return [encoding.ids for encoding in self.tokenizer.encode_batch(checked, add_special_tokens=False)]

    def _pad(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max((len(row) for row in rows), default=0)
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
        return ids, mask

    def encode_prompt(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) that `BlipForConditionalGeneration.generate` passes to its decoder.

        An empty prompt gives just BOS (unconditional captioning). Prompts of different lengths are
        right-padded as the processor does; generate() then drops the last column of every row, so
        only a prompt shared by the batch decodes sensibly (that is what BlipCaptioner uses).
        """
        ids, mask = self._pad([[self.cls_token_id, *row, self.eos_token_id] for row in self._pieces(texts, True)])
        ids[:, 0] = self.bos_token_id
        return ids[:, :-1], mask[:, :-1]

    def encode_for_itm(self, texts: Sequence[str], max_length: int = DEFAULT_ITM_MAX_LENGTH) -> tuple[np.ndarray, np.ndarray]:
        """`[CLS] text [SEP]` truncated to max_length (specials included), padded to the longest row."""
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        rows = [[self.cls_token_id, *row[: max_length - 2], self.eos_token_id] for row in self._pieces(texts, False)]
        return self._pad(rows)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Caption text from generated ids (prompt included), specials and padding removed."""
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return [self.decode(row) for row in rows]
