"""Typed search filters -> a Milvus boolean expression, with every user value quoted and escaped.

User text never reaches the expression unescaped: strings become double-quoted literals with
backslash and quote escaped (values with line breaks are refused); numbers are checked finite and formatted by
repr(); attribute keys must be on the allow-list (settings `filterable_attributes`) and match
[A-Za-z0-9_]+. Milvus Lite 2.5.1 rejects expression templates (`filter_params`: the parser sees
`{name}` as a syntax error and pymilvus then retries for minutes), so literals are built here.
The same filter also evaluates in Python (`matches`) on stored rows, which the tests use to check
that the store and the expression agree.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from gateway.errors import InvalidInput

_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
MAX_VALUE_CHARS = 256


def quote(value: str) -> str:
    """A Milvus string literal for `value`: double quotes, with backslash and quote escaped.

    Milvus' parser unescapes only \\ and \" (measured on Milvus Lite 2.5.1: backslash-t, -n and -u sequences stay
    literal: no escape sequences); other characters go through raw, except line breaks, which end an expression token:
    values with line breaks are refused.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"filter value must be a string, got {type(value).__name__}")
    if "\n" in value or "\r" in value:
        raise InvalidInput(f"filter value {value[:40]!r} contains a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"


def number(value: float, name: str) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInput(f"filter {name} must be a finite number, got {value}")
    return repr(value)


@dataclass
class ProductFilter:
    """The typed filters of a search (see retrieval.v1.Filters); empty fields mean "no constraint"."""

    categories: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)
    min_price: float | None = None
    max_price: float | None = None
    tags_any: list[str] = field(default_factory=list)
    tags_all: list[str] = field(default_factory=list)
    in_stock: bool | None = None
    ids: list[str] = field(default_factory=list)
    attributes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, message: Any) -> "ProductFilter":
        attributes: dict[str, list[str]] = {}
        for item in message.attributes:
            attributes.setdefault(item.key, []).extend(item.values)
        return cls(
            categories=list(message.categories),
            brands=list(message.brands),
            min_price=message.min_price if message.HasField("min_price") else None,
            max_price=message.max_price if message.HasField("max_price") else None,
            tags_any=list(message.tags_any),
            tags_all=list(message.tags_all),
            in_stock=message.in_stock if message.HasField("in_stock") else None,
            ids=list(message.ids),
            attributes=attributes,
        )

    def validate(self, allowed_attributes: Sequence[str], max_values: int = 100) -> None:
        """Raise InvalidInput naming the offending filter field."""
        for name in ("categories", "brands", "tags_any", "tags_all", "ids"):
            values = getattr(self, name)
            if len(values) > max_values:
                raise InvalidInput(f"filter {name} has {len(values)} values; the limit is {max_values}")
            for value in values:
                if len(value) > MAX_VALUE_CHARS:
                    raise InvalidInput(f"filter {name} value is {len(value)} characters; the limit is {MAX_VALUE_CHARS}")
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise InvalidInput(f"filter {name} must be a finite number >= 0, got {value}")
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise InvalidInput(f"filter min_price {self.min_price} is greater than max_price {self.max_price}")
        for key, values in self.attributes.items():
            if key not in allowed_attributes or not _KEY.match(key):
                allowed = ", ".join(allowed_attributes) or "none"
                raise InvalidInput(f"unknown filter field 'attributes.{key}': filterable attributes are {allowed}")
            if not values:
                raise InvalidInput(f"filter attributes.{key} has no values")
            if len(values) > max_values:
                raise InvalidInput(f"filter attributes.{key} has {len(values)} values; the limit is {max_values}")

    def expression(self) -> str:
        """The Milvus boolean expression ('' when there is no constraint)."""
        clauses: list[str] = []
        if self.ids:
            clauses.append(f"id in {string_list(self.ids)}")
        if self.categories:
            clauses.append(f"category in {string_list(self.categories)}")
        if self.brands:
            clauses.append(f"brand in {string_list(self.brands)}")
        if self.min_price is not None or self.max_price is not None:
            clauses.append("price >= 0.0")  # unknown prices are stored as -1 and never match
        if self.min_price is not None:
            clauses.append(f"price >= {number(self.min_price, 'min_price')}")
        if self.max_price is not None:
            clauses.append(f"price <= {number(self.max_price, 'max_price')}")
        if self.in_stock is not None:
            clauses.append(f"in_stock == {'true' if self.in_stock else 'false'}")
        if self.tags_any:
            clauses.append(f'json_contains_any(meta["tags"], {string_list(self.tags_any)})')
        if self.tags_all:
            clauses.append(f'json_contains_all(meta["tags"], {string_list(self.tags_all)})')
        for key in sorted(self.attributes):
            if not _KEY.match(key):
                raise InvalidInput(f"unknown filter field 'attributes.{key}'")
            clauses.append(f'meta["attributes"][{quote(key)}] in {string_list(self.attributes[key])}')
        return " and ".join(f"({c})" for c in clauses)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """The same filter on a stored row (store.py row layout), in Python."""
        meta = row.get("meta") or {}
        tags = set(meta.get("tags", []))
        attributes = meta.get("attributes", {})
        price = float(row.get("price", -1.0))
        checks = [
            not self.ids or row["id"] in self.ids,
            not self.categories or row.get("category") in self.categories,
            not self.brands or row.get("brand") in self.brands,
            (self.min_price is None and self.max_price is None) or price >= 0,
            self.min_price is None or price >= self.min_price,
            self.max_price is None or price <= self.max_price,
            self.in_stock is None or bool(row.get("in_stock")) == self.in_stock,
            not self.tags_any or bool(tags & set(self.tags_any)),
            not self.tags_all or set(self.tags_all) <= tags,
            all(attributes.get(k) in v for k, v in self.attributes.items()),
        ]
        return all(checks)
