"""Conversions between store rows (gateway/store.py layout) and retrieval.v1 messages."""
from __future__ import annotations

from typing import Any

from retrieval.v1 import retrieval_pb2 as pb


def record_of(row: dict[str, Any]) -> pb.ProductRecord:
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
