"""Request checks shared by the RPCs; each failure names the field and the limit (INVALID_ARGUMENT)."""
from __future__ import annotations

import re
from typing import Sequence

from gateway.errors import InvalidInput
from gateway.settings import Settings

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


def check_text(value: str, settings: Settings, field: str, max_chars: int | None = None) -> str:
    limit = max_chars or settings.max_text_chars
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; the limit is {limit}")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    return value


def check_image(value: bytes, settings: Settings, field: str = "image") -> bytes:
    if len(value) > settings.max_image_bytes:
        raise InvalidInput(f"{field} is {len(value)} bytes; the limit is {settings.max_image_bytes}")
    return value


def check_top_k(value: int, settings: Settings) -> int:
    if value == 0:
        return settings.top_k_default
    if not 1 <= value <= settings.top_k_max:
        raise InvalidInput(f"top_k {value} is out of range: use 1..{settings.top_k_max} (0 = default {settings.top_k_default})")
    return value
