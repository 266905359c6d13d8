"""Channel fusion: the one scoring formula, the fused vector that ranks by it, and RRF.

Channels of a product (gateway/rows.py stores them):

    image    CLIP image embedding of the product photo                        (dense, normalized)
    title    CLIP text embedding of "title. description"                      (dense, normalized)
    caption  CLIP text embedding of "caption. tag1, tag2, ..."                (dense, normalized)
    keyword  BM25 of the query against title, description, brand, caption and tags (Milvus)

A product has a channel only when it has content for it (no title text -> no title channel; no
caption and no tags -> no caption channel). With weights w normalized to sum 1 and P the set of
channels the product has, the score of a product p for a query q is

    score(p) = sum_{c in P} w_c * s_c(q, p) / sum_{c in P} w_c

where s_c = cos(q, v_c) for a dense channel and, for the keyword channel, BM25 saturated into [0, 1):

    s_keyword = b^e / (b^e + pivot^e),   b = bm25(q, p)   (0 when no query term matches)

(the `keyword_pivot` and `keyword_exponent` settings; a BM25 score equal to the pivot gives 0.5). The
score keeps BM25's absolute scale, in which a rare term (a SKU, a brand) scores far above a common
word: dividing by the query's best BM25 instead would give every query's best keyword match 1.0, the
weak ones of a descriptive query as much as an exact SKU. A product with no channel of positive
weight has no score and is not returned.

The fused vector stored per product is the un-normalized weighted sum over its dense channels,

    u(p) = sum_{c in P, dense} w_c v_c / sum_{c in P, dense} w_c

so that an inner-product search with a normalized query ranks by exactly the dense part of the
score: q . u(p) = score(p) when the keyword weight is 0.

`rrf`: score(p) = sum_c w_c / (k + rank_c(p)), rank 1-based within channel c's candidate list,
with normalized weights; a product missing from a list contributes nothing for that channel.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np

DENSE_CHANNELS = ("image", "title", "caption")
KEYWORD = "keyword"
CHANNELS = (*DENSE_CHANNELS, KEYWORD)
FUSED = "fused"
BM25 = "bm25"  # channel_scores key of the raw BM25 beside the keyword score
WEIGHT_TOLERANCE = 1e-6


class FusionError(ValueError):
    """Weights or vectors that cannot be fused (all-zero weights, NaN, wrong shape)."""


def normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalize along `axis`; a zero vector is an error (it has no direction)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms <= 1e-12):
        raise FusionError("cannot normalize a zero or non-finite vector")
    return (vectors / norms).astype(np.float32)


def check_weights(weights: Mapping[str, float], channels: Sequence[str] = CHANNELS) -> dict[str, float]:
    """Weights for every channel, finite and >= 0, not all zero, normalized to sum 1."""
    out = {}
    for channel in weights:
        if channel not in CHANNELS:
            raise FusionError(f"unknown channel {channel!r}; the channels are {', '.join(CHANNELS)}")
    for channel in channels:
        value = float(weights.get(channel, 0.0))
        if not np.isfinite(value) or value < 0:
            raise FusionError(f"weight of channel {channel!r} must be a finite number >= 0, got {value}")
        out[channel] = value
    total = sum(out.values())
    if total <= 0:
        raise FusionError("at least one channel weight must be > 0")
    return {c: v / total for c, v in out.items()}


def dense_part(weights: Mapping[str, float]) -> dict[str, float] | None:
    """The dense channels' weights renormalized to sum 1 (None when they are all zero)."""
    dense = {c: float(weights.get(c, 0.0)) for c in DENSE_CHANNELS}
    total = sum(dense.values())
    return {c: v / total for c, v in dense.items()} if total > 0 else None


def same_weights(a: Mapping[str, float], b: Mapping[str, float], tolerance: float = WEIGHT_TOLERANCE) -> bool:
    """Two normalized weight sets are the same (within float tolerance)."""
    return all(abs(float(a.get(c, 0.0)) - float(b.get(c, 0.0))) <= tolerance for c in CHANNELS)


def fused_vectors(channels: Mapping[str, np.ndarray], present: Sequence[Iterable[str]], weights: Mapping[str, float]) -> np.ndarray:
    """u(p) = sum_{c in P} w_c v_c / sum_{c in P} w_c over dense channels, row-wise.

    `channels` maps a dense channel to [N, D] vectors (rows of absent channels are ignored),
    `present[i]` names the channels product i has. A product none of whose present channels has
    weight gets the zero vector (its inner product with any query is 0; search drops it).
    """
    weights = check_weights(weights)
    n = len(present)
    dim = next(iter(channels.values())).shape[-1]
    out = np.zeros((n, dim), dtype=np.float32)
    for i, have in enumerate(present):
        have = set(have)
        total = sum(weights[c] for c in DENSE_CHANNELS if c in have)
        if total <= 0:
            continue
        for c in DENSE_CHANNELS:
            if c in have and weights[c] > 0:
                out[i] += (weights[c] / total) * np.asarray(channels[c][i], dtype=np.float32)
    return out


def weighted_score(channel_scores: Mapping[str, float], present: Iterable[str], weights: Mapping[str, float]) -> float | None:
    """sum_{c in P} w_c s_c / sum_{c in P} w_c; None when no present channel has weight."""
    present = set(present)
    total = sum(w for c, w in weights.items() if c in present and w > 0)
    if total <= 0:
        return None
    return float(sum(w * channel_scores[c] for c, w in weights.items() if c in present and w > 0) / total)


def keyword_score(bm25: float, pivot: float, exponent: float) -> float:
    """BM25 -> [0, 1): b^e / (b^e + pivot^e), computed as 1 / (1 + exp(e (ln pivot - ln b))) (no overflow)."""
    if not (pivot > 0 and exponent > 0):
        raise FusionError(f"keyword_pivot and keyword_exponent must be > 0, got {pivot} and {exponent}")
    if not bm25 > 0:
        return 0.0
    log_ratio = exponent * (math.log(pivot) - math.log(float(bm25)))
    return 0.0 if log_ratio > 700 else float(1.0 / (1.0 + math.exp(log_ratio)))


def compose_query(image: np.ndarray | None, text: np.ndarray | None, text_weight: float) -> np.ndarray:
    """One query vector from an image, a text, or both (the text modifies the image)."""
    if image is None and text is None:
        raise FusionError("a query needs text, an image, or both")
    if image is None:
        return normalize(text)
    if text is None:
        return normalize(image)
    if not 0.0 <= text_weight <= 1.0:
        raise FusionError(f"text_weight must be in [0, 1], got {text_weight}")
    return normalize((1.0 - text_weight) * np.asarray(image) + text_weight * np.asarray(text))


def rrf_scores(rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: id -> sum_c w_c / (k + rank_c), rank 1-based; best first."""
    scores: dict[str, float] = {}
    for channel, ids in rankings.items():
        weight = float(weights.get(channel, 0.0))
        if weight <= 0:
            continue
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def caption_text(caption: str, tags: Sequence[str]) -> str:
    """The text the caption channel embeds: the caption, then the tags ("" = no caption channel)."""
    parts = [caption.strip()] if caption and caption.strip() else []
    tags = [t.strip() for t in tags if t and t.strip()]
    if tags:
        parts.append(", ".join(tags))
    return ". ".join(parts)


def title_text(title: str, description: str) -> str:
    """The text the title channel embeds ("" = no title channel)."""
    parts = [p.strip() for p in (title, description) if p and p.strip()]
    return ". ".join(parts)
