"""CLIP tokenization without torch: open_clip's SimpleTokenizer rebuilt on HF `tokenizers` (Rust BPE).

Export writes `tokenizer.json` into the model repository (built here from open_clip's BPE merges,
or saved from an HF tokenizer for models that use one); every consumer loads that file.
Text cleaning is open_clip's ('lower': ftfy, double html-unescape, whitespace collapse, lowercase).
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from preprocessing.text_cleaning import CLEANERS

SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
# open_clip's SimpleTokenizer pattern, minus the special tokens (matched first as added tokens).
_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MAX_TEXT_CHARS = 10_000


class TextInputError(ValueError):
    """Text we refuse (empty, not a string, absurdly long); the message is shown to API callers."""


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def build_clip_bpe_tokenizer(bpe_merges_gz: str | Path) -> Tokenizer:
    """The HF-tokenizers twin of open_clip.SimpleTokenizer, built from its gzipped merges file."""
    lines = gzip.open(bpe_merges_gz).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    base = list(_bytes_to_unicode().values())
    vocab_list = base + [token + "</w>" for token in base] + ["".join(m) for m in merges]
    vocab_list += [SOT_TOKEN, EOT_TOKEN]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.add_special_tokens([SOT_TOKEN, EOT_TOKEN])
    return tokenizer


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning."""
    return CLEANERS["lower"](text)


class ClipTokenizer:
    """Texts -> int64 [N, context_length] ids: SOT + tokens + EOT, truncated with EOT last, zero-padded."""

    def __init__(
        self,
        tokenizer_file: str | Path,
        context_length: int = 77,
        sot_token_id: int | None = None,
        eot_token_id: int | None = None,
        pad_token_id: int = 0,
        lowercase_clean: bool = True,
    ) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.context_length = context_length
        self.sot_token_id = sot_token_id if sot_token_id is not None else self.tokenizer.token_to_id(SOT_TOKEN)
        self.eot_token_id = eot_token_id if eot_token_id is not None else self.tokenizer.token_to_id(EOT_TOKEN)
        self.pad_token_id = pad_token_id
        self.lowercase_clean = lowercase_clean

    @classmethod
    def from_manifest_entry(cls, repository: str | Path, entry: dict) -> "ClipTokenizer":
        return cls(
            Path(repository) / entry["file"],
            context_length=entry["context_length"],
            sot_token_id=entry["sot_token_id"],
            eot_token_id=entry["eot_token_id"],
            pad_token_id=entry.get("pad_token_id", 0),
        )

    def validate(self, text: object) -> str:
        if not isinstance(text, str):
            raise TextInputError(f"text must be a string, got {type(text).__name__}")
        if len(text) > MAX_TEXT_CHARS:
            raise TextInputError(f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
        cleaned = clean_text(text) if self.lowercase_clean else " ".join(text.split())
        if not cleaned:
            raise TextInputError("text is empty (after trimming whitespace)")
        return cleaned

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without SOT/EOT (open_clip's SimpleTokenizer.encode)."""
        return self.tokenizer.encode(self.validate(text), add_special_tokens=False).ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Long texts are truncated to the context, as open_clip does (documented behaviour)."""
        return self.encode_cleaned([self.validate(text) for text in texts])

    def encode_cleaned(self, cleaned: Sequence[str]) -> np.ndarray:
        """Ids of texts `validate` already cleaned (a batch server validates each request once)."""
        encodings = self.tokenizer.encode_batch(cleaned, add_special_tokens=False)
        ids = np.full((len(cleaned), self.context_length), self.pad_token_id, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            tokens = [self.sot_token_id, *encoding.ids, self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            ids[row, : len(tokens)] = tokens
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Readable text back from ids (for logs and debugging), as open_clip's decode does it."""
        specials = {self.sot_token_id, self.eot_token_id, self.pad_token_id}
        pieces = "".join(self.tokenizer.id_to_token(int(i)) or "" for i in ids if int(i) not in specials)
        byte_decoder = {char: byte for byte, char in _bytes_to_unicode().items()}
        raw = bytearray(byte_decoder[c] for c in pieces)
        text = raw.decode("utf-8", errors="replace")
        return " ".join(text.replace("</w>", " ").split())
