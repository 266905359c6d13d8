"""The stored product, both ways: the one owner of the row layout the store holds.

A row is what gateway/store.py writes to and reads from Milvus: scalar fields, one dense vector per
channel (gateway/fusion.py), the fused vector, the channels the product has (a bit mask), and the
keyword text that Milvus' BM25 function turns into the sparse `keyword_sparse` field. An absent
dense channel is stored as the zero vector (Milvus vector fields cannot be null) and its bit is
clear, so scoring renormalizes its weight away instead of scoring a made-up vector.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from gateway.fusion import KEYWORD
from retrieval.v1 import retrieval_pb2 as pb

VECTOR_FIELD = {"image": "image_vec", "title": "title_vec", "caption": "caption_vec"}
FUSED_FIELD = "fused_vec"
DENSE_FIELDS = [*VECTOR_FIELD.values(), FUSED_FIELD]
KEYWORD_TEXT_FIELD = "keyword_text"
KEYWORD_SPARSE_FIELD = "keyword_sparse"
CHANNEL_MASK_FIELD = "channels"
SCALAR_FIELDS = [
    "id", "title", "description", "category", "brand", "price", "in_stock", "caption", "image_uri", "meta", CHANNEL_MASK_FIELD,
]
CHANNEL_BITS = {"image": 1, "title": 2, "caption": 4, KEYWORD: 8}

# VARCHAR lengths (Milvus servers enforce them, Milvus Lite does not: the gateway checks them).
MAX_LENGTHS = {
    "id": 128,
    "title": 1024,
    "description": 8192,
    "category": 256,
    "brand": 256,
    "caption": 1024,
    "image_uri": 2048,
    KEYWORD_TEXT_FIELD: 16384,
}


def mask_of(channels: Iterable[str]) -> int:
    return sum(CHANNEL_BITS[c] for c in set(channels))


def channels_of(mask: int) -> frozenset[str]:
    return frozenset(c for c, bit in CHANNEL_BITS.items() if int(mask) & bit)


def keyword_text(product_id: str, title: str, description: str, brand: str, caption: str, tags: Sequence[str]) -> str:
    """What the keyword channel indexes (Milvus analyzes it: see store.KEYWORD_ANALYZER); the id is
    in it, so a query that is only a product id or SKU finds that product."""
    parts = [p.strip() for p in (product_id, title, brand, description, caption) if p and p.strip()]
    parts += [t.strip() for t in tags if t and t.strip()]
    return " ".join(parts)[: MAX_LENGTHS[KEYWORD_TEXT_FIELD]]


@dataclass
class Channels:
    """The model outputs of one product: dense vectors of the channels it has, caption and tags."""

    vectors: dict[str, np.ndarray]  # present dense channels only
    caption: str = ""
    tags: list[str] = field(default_factory=list)


def build_row(product: pb.Product, channels: Channels, fused: np.ndarray, dim: int) -> dict[str, Any]:
    """A store row from the upserted message and its model outputs."""
    text = keyword_text(product.id, product.title, product.description, product.brand, channels.caption, channels.tags)
    present = set(channels.vectors) | ({KEYWORD} if text else set())
    row: dict[str, Any] = {
        "id": product.id,
        "title": product.title,
        "description": product.description,
        "category": product.category,
        "brand": product.brand,
        "price": float(product.price) if product.HasField("price") else -1.0,
        "in_stock": product.in_stock if product.HasField("in_stock") else True,
        "caption": channels.caption[: MAX_LENGTHS["caption"]],
        "image_uri": product.image_uri,
        "meta": {"tags": list(channels.tags), "attributes": dict(product.attributes)},
        CHANNEL_MASK_FIELD: mask_of(present),
        KEYWORD_TEXT_FIELD: text,
        FUSED_FIELD: np.asarray(fused, np.float32),
    }
    zero = np.zeros(dim, np.float32)
    for channel, name in VECTOR_FIELD.items():
        vec = channels.vectors.get(channel)
        row[name] = zero if vec is None else np.asarray(vec, np.float32)
    return row


def present_channels(row: Mapping[str, Any]) -> frozenset[str]:
    """The channels a stored row has content for."""
    return channels_of(int(row.get(CHANNEL_MASK_FIELD, 0)))


def dense_vectors(row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Dense channel -> vector of a row read with vectors (present channels only)."""
    have = present_channels(row)
    return {c: np.asarray(row[f], dtype=np.float32) for c, f in VECTOR_FIELD.items() if f in row and c in have}


def record_of(row: Mapping[str, Any]) -> pb.ProductRecord:
    """The API's view of a stored row."""
    meta = row.get("meta") or {}
    record = pb.ProductRecord(
        id=row["id"],
        title=row.get("title", ""),
        description=row.get("description", ""),
        category=row.get("category", ""),
        brand=row.get("brand", ""),
        in_stock=bool(row.get("in_stock", True)),
        tags=list(meta.get("tags", [])),
        caption=row.get("caption", ""),
        image_uri=row.get("image_uri", ""),
    )
    price = float(row.get("price", -1.0))
    if price >= 0:
        record.price = price
    record.attributes.update({str(k): str(v) for k, v in (meta.get("attributes") or {}).items()})
    return record


def vectors_message(row: Mapping[str, Any]) -> pb.ProductVectors:
    """GetProducts include_vectors: the present channels' vectors and the fused vector."""
    message = pb.ProductVectors()
    for channel, vec in dense_vectors(row).items():
        getattr(message, channel).extend(vec.tolist())
    message.fused.extend(np.asarray(row[FUSED_FIELD], np.float32).tolist())
    return message

