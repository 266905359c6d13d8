"""Text cleaning as open_clip does it before tokenizing ('lower', 'whitespace', 'canonicalize').

open_clip's tokenizers pick one of these by name (`clean=` of HFTokenizer; SimpleTokenizer uses
'lower'); the manifest stores the name, so serving cleans exactly as open_clip did at training.
"""
from __future__ import annotations

import html
import string
from typing import Callable

import ftfy

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def basic_clean(text: str) -> str:
    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def canonicalize_text(text: str) -> str:
    """big_vision's canonicalization (SigLIP): underscores to spaces, punctuation removed, lowercase."""
    text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split()).strip()


CLEANERS: dict[str, Callable[[str], str]] = {
    "lower": lambda text: whitespace_clean(basic_clean(text)).lower(),
    "whitespace": lambda text: whitespace_clean(basic_clean(text)),
    "canonicalize": lambda text: canonicalize_text(basic_clean(text)),
}
