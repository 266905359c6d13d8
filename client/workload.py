"""What the load generator sends: a seeded mix of text, image and composed searches, and optional
upserts and gets (GetProducts of products this workload upserted).

Query images come from a catalog when one is given (its product photos), else from synthetic
product-like pictures drawn here; texts are shopper queries (or catalog titles).
"""
from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from client.catalog import read_catalog
from client.messages import SearchFilters, search_request
from retrieval.v1 import retrieval_pb2 as pb

KINDS = ("text", "image", "composed", "upsert", "get")
QUERIES = [
    "red leather ankle boots", "black running sneakers", "white cotton t-shirt", "blue denim jacket",
    "summer floral dress", "wool winter coat", "brown leather handbag", "striped long sleeve shirt",
    "grey knitted pullover", "slim fit trousers", "open toe sandals", "waterproof hiking boots",
]
MODIFIERS = ["in red", "but darker", "with stripes", "made of leather", "for winter", "in white"]


def parse_mix(text: str) -> dict[str, float]:
    """'text=0.5,image=0.3,composed=0.2' -> normalized weights (unknown kinds are an error)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in KINDS:
            raise ValueError(f"unknown request kind {name!r}; kinds are {', '.join(KINDS)}")
        mix[name] = float(value or 1)
        if mix[name] < 0:
            raise ValueError("mix weights must be >= 0")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("the mix needs at least one kind with weight > 0")
    return {k: v / total for k, v in mix.items() if v > 0}


def synthetic_images(count: int, seed: int = 0, size: int = 96) -> list[bytes]:
    """Simple product-like pictures (a coloured shape on a light background), PNG-encoded."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        box = sorted(rng.sample(range(8, size - 8), 2)), sorted(rng.sample(range(8, size - 8), 2))
        shape = [box[0][0], box[1][0], max(box[0][1], box[0][0] + 8), max(box[1][1], box[1][0] + 8)]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=colour)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@dataclass
class Workload:
    """Seeded request factory; `next()` returns (kind, request message)."""

    mix: dict[str, float]
    images: list[bytes]
    texts: list[str] = field(default_factory=lambda: list(QUERIES))
    top_k: int = 10
    filters: SearchFilters | None = None
    seed: int = 0
    upsert_prefix: str = field(default_factory=lambda: f"loadgen-{uuid.uuid4().hex[:8]}-")
    upserted: list[str] = field(default_factory=list)
    upsert_pool: int = 0  # > 0: upserts cycle through this many ids (a steady catalog for soaks); 0 = new ids

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._kinds = list(self.mix)
        self._weights = [self.mix[k] for k in self._kinds]

    @classmethod
    def build(cls, mix: dict[str, float], catalog: Path | None = None, max_images: int = 32, **kwargs) -> "Workload":
        images: list[bytes] = []
        texts: list[str] = []
        if catalog is not None:
            for row in read_catalog(catalog):
                if row.error is None and len(images) < max_images:
                    images.append(row.image_path.read_bytes())
                    if row.fields.get("title"):
                        texts.append(str(row.fields["title"]))
                if len(images) >= max_images:
                    break
        return cls(mix=mix, images=images or synthetic_images(16, kwargs.get("seed", 0)), texts=texts or list(QUERIES), **kwargs)

    def next(self) -> tuple[str, object]:
        kind = self._rng.choices(self._kinds, self._weights)[0]
        rng = self._rng
        if kind == "text":
            return kind, search_request(rng.choice(self.texts), top_k=self.top_k, filters=self.filters)
        if kind == "image":
            return kind, search_request(image=rng.choice(self.images), top_k=self.top_k, filters=self.filters)
        if kind == "composed":
            return kind, search_request(rng.choice(MODIFIERS), rng.choice(self.images), top_k=self.top_k, filters=self.filters)
        if kind == "get":
            ids = rng.sample(self.upserted, min(3, len(self.upserted))) if self.upserted else [f"{self.upsert_prefix}none"]
            return kind, ids
        if self.upsert_pool and len(self.upserted) >= self.upsert_pool:
            product_id = rng.choice(self.upserted)  # replaces an existing product: the catalog stays the same size
        else:
            product_id = f"{self.upsert_prefix}{len(self.upserted)}"
            self.upserted.append(product_id)
        product = pb.Product(
            id=product_id, image=rng.choice(self.images), title=rng.choice(self.texts), category="loadgen", price=round(rng.uniform(5, 200), 2)
        )
        return kind, [product]

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in self.mix.items())


def level_list(values: Sequence[float]) -> list[float]:
    if not values or any(v <= 0 for v in values):
        raise ValueError("levels must be > 0")
    return list(values)
