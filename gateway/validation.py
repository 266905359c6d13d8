"""Request checks shared by the RPCs; each failure names the field and the limit (INVALID_ARGUMENT)."""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from gateway.errors import InvalidInput
from gateway.settings import Settings
from PIL import Image

from preprocessing.image import ImageDecodeError, ImageLimits, decode_image, probe_image

_ID = re.compile(r"^[A-Za-z0-9._:/\-]{1,128}$")


def check_id(value: str, field: str = "id") -> str:
    if not value:
        raise InvalidInput(f"{field} is empty")
    if not _ID.match(value):
        raise InvalidInput(f"{field} {value[:40]!r} is invalid: use 1-128 characters from letters, digits and ._:/-")
    return value


def check_ids(values: Sequence[str], settings: Settings, field: str = "ids") -> list[str]:
    if not values:
        raise InvalidInput(f"{field} is empty: pass at least one product id")
    if len(values) > settings.max_ids:
        raise InvalidInput(f"{field} has {len(values)} ids; the limit is {settings.max_ids}")
    return [check_id(v, field) for v in values]


_ALLOWED_CONTROL = {"\t", "\n", "\r"}


def check_text(value: str, settings: Settings, field: str, max_chars: int | None = None) -> str:
    """Length within the limit; no NUL or other control characters (tab and line breaks are whitespace).

    Texts longer than the model's context (77 CLIP tokens) are accepted and truncated by the tokenizer.
    """
    limit = max_chars or settings.max_text_chars
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    for position, char in enumerate(value):
        if char not in _ALLOWED_CONTROL and unicodedata.category(char) == "Cc":
            raise InvalidInput(f"{field} contains the control character U+{ord(char):04X} at position {position}")
    return value


def check_image(value: bytes, settings: Settings, field: str = "image", required: bool = False) -> bytes:
    """The cheap checks, from the header (byte limit, format, pixel count: bombs), with the field named;
    empty is allowed unless `required` (e.g. a text-only search). Runs on the event loop, so it does
    not decode: a truncated or corrupt body is refused (INVALID_ARGUMENT) by the decode in the backend."""
    if not value:
        if required:
            raise InvalidInput(f"{field} is empty (0 bytes)")
        return value
    if len(value) > settings.max_image_bytes:
        raise InvalidInput(f"{field} is {len(value)} bytes; the limit is {settings.max_image_bytes}")
    try:
        probe_image(value, ImageLimits(max_bytes=settings.max_image_bytes))
    except ImageDecodeError as exc:
        raise InvalidInput(f"{field}: {exc}") from None
    return value


def decode_checked(value: bytes, settings: Settings, field: str = "image") -> Image.Image:
    """The decoded RGB image; InvalidInput naming `field` when it is empty, too large or not an image."""
    if len(value) > settings.max_image_bytes:
        raise InvalidInput(f"{field} is {len(value)} bytes; the limit is {settings.max_image_bytes}")
    try:
        return decode_image(value, ImageLimits(max_bytes=settings.max_image_bytes))
    except ImageDecodeError as exc:
        raise InvalidInput(f"{field}: {exc}") from None


MAX_TAG_CHARS = 128
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 256


def check_tags_and_attributes(tags: Sequence[str], attributes: dict[str, str], field: str = "product") -> None:
    """Seller tags and attributes are stored and echoed back: bound each one and refuse control characters."""
    for i, tag in enumerate(tags):
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidInput(f"{field}.tags[{i}] is {len(tag)} characters; the limit is {MAX_TAG_CHARS}")
        _no_control(tag, f"{field}.tags[{i}]")
    for key, value in attributes.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY_CHARS:
            raise InvalidInput(f"{field}.attributes key {key[:40]!r} must have 1..{MAX_ATTRIBUTE_KEY_CHARS} characters")
        if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise InvalidInput(f"{field}.attributes[{key[:40]!r}] is {len(value)} characters; the limit is {MAX_ATTRIBUTE_VALUE_CHARS}")
        _no_control(key, f"{field}.attributes key")
        _no_control(value, f"{field}.attributes[{key[:40]!r}]")


def _no_control(value: str, field: str) -> None:
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise InvalidInput(f"{field} contains the control character U+{ord(char):04X}")


def check_top_k(value: int, settings: Settings) -> int:
    if value == 0:
        return settings.top_k_default
    if not 1 <= value <= settings.top_k_max:
        raise InvalidInput(f"top_k {value} is out of range: use 1..{settings.top_k_max} (0 = default {settings.top_k_default})")
    return value
