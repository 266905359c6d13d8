"""Plain Python values -> retrieval.v1 request messages (one place, shared by the sync and aio clients)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, Union

from retrieval.v1 import retrieval_pb2 as pb

ImageLike = Union[bytes, str, Path]

MODES = {"fused": pb.SEARCH_MODE_FUSED, "multi_vector": pb.SEARCH_MODE_MULTI_VECTOR, "multi": pb.SEARCH_MODE_MULTI_VECTOR}
COMBINES = {"weighted": pb.COMBINE_WEIGHTED, "rrf": pb.COMBINE_RRF}
CHANNELS = ("image", "title", "caption", "keyword")  # retrieval.v1.ChannelWeights


def image_bytes(image: ImageLike | None) -> bytes:
    """Bytes as given, or the contents of a file path (the gateway decodes; we do not)."""
    if image is None:
        return b""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return Path(image).read_bytes()


@dataclass
class SearchFilters:
    """Typed filters (ANDed); empty fields mean no constraint. Mirrors retrieval.v1.Filters."""

    categories: Sequence[str] = ()
    brands: Sequence[str] = ()
    min_price: float | None = None
    max_price: float | None = None
    tags_any: Sequence[str] = ()
    tags_all: Sequence[str] = ()
    in_stock: bool | None = None
    ids: Sequence[str] = ()
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def to_proto(self) -> pb.Filters:
        message = pb.Filters(
            categories=list(self.categories),
            brands=list(self.brands),
            tags_any=list(self.tags_any),
            tags_all=list(self.tags_all),
            ids=list(self.ids),
            attributes=[pb.AttributeFilter(key=k, values=list(v)) for k, v in self.attributes.items()],
        )
        if self.min_price is not None:
            message.min_price = float(self.min_price)
        if self.max_price is not None:
            message.max_price = float(self.max_price)
        if self.in_stock is not None:
            message.in_stock = bool(self.in_stock)
        return message


def weights_message(weights: Mapping[str, float] | None) -> pb.ChannelWeights | None:
    if not weights:
        return None
    unknown = set(weights) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channel(s) {sorted(unknown)}; channels are {', '.join(CHANNELS)}")
    return pb.ChannelWeights(**{k: float(v) for k, v in weights.items()})


def parse_weights(text: str) -> dict[str, float]:
    """'image=0.6,title=0.3,caption=0.1' (or '0.6,0.3,0.1[,keyword]' in channel order) -> dict.

    Channels not named are left to the gateway's defaults."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" not in p for p in parts):
        if len(parts) not in (len(CHANNELS) - 1, len(CHANNELS)):
            raise ValueError(f"give 3 or 4 numbers ({','.join(CHANNELS)}) or name=value pairs")
        return {c: float(p) for c, p in zip(CHANNELS, parts)}
    out = {}
    for part in parts:
        name, _, value = part.partition("=")
        if name.strip() not in CHANNELS:
            raise ValueError(f"unknown channel {name.strip()!r}; channels are {', '.join(CHANNELS)}")
        out[name.strip()] = float(value)
    return out


def search_request(
    text: str = "",
    image: ImageLike | None = None,
    *,
    top_k: int = 0,
    weights: Mapping[str, float] | None = None,
    filters: SearchFilters | None = None,
    mode: str = "fused",
    combine: str = "weighted",
    rerank: bool = False,
    text_weight: float | None = None,
    rrf_k: int = 0,
) -> pb.SearchRequest:
    """A text, image or composed (image + text modifier) query."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}")
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {sorted(COMBINES)}")
    request = pb.SearchRequest(
        text=text or "",
        image=image_bytes(image),
        top_k=int(top_k),
        mode=MODES[mode],
        combine=COMBINES[combine],
        rerank=rerank,
        rrf_k=int(rrf_k),
    )
    channel_weights = weights_message(weights)
    if channel_weights is not None:
        request.weights.CopyFrom(channel_weights)
    if filters is not None:
        request.filters.CopyFrom(filters.to_proto())
    if text_weight is not None:
        request.text_weight = float(text_weight)
    return request
