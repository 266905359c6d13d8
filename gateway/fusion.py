"""Channel fusion: how a product's channel vectors become one vector, and how channel scores combine.

Every product has three channel vectors in CLIP space, each L2-normalized:

    image    CLIP image embedding of the product photo
    title    CLIP text embedding of "title. description"
    caption  CLIP text embedding of "caption. tag1, tag2, ..." (BLIP caption + interrogator tags)

Fused vector (stored beside the channels, searched in `fused` mode):

    fused = normalize(w_image * image + w_title * title + w_caption * caption)

so cos(q, fused) = sum_c w_c cos(q, c) / ||sum_c w_c c||: the weighted channel score divided by a
per-product constant. A query vector q is one CLIP vector: the text embedding, the image
embedding, or for a composed query (image + text modifier) normalize((1 - t) * image + t * text).

`multi_vector` mode scores each channel separately and combines:

    weighted:  score = sum_c w_c * cos(q, c) / sum_c w_c                 (weights normalized to 1)
    rrf:       score = sum_c w_c / (k + rank_c)   rank_c = 1-based rank of the product in channel c

A product missing from a channel's candidate list contributes nothing to that channel (RRF) or
its exact cosine (weighted, computed here from the returned vectors). Zero-weight channels are
skipped. The default weights live in gateway/settings.py and docs/gateway.md says how they were
chosen.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

CHANNELS = ("image", "title", "caption")
FUSED = "fused"


class FusionError(ValueError):
    """Weights or vectors that cannot be fused (all-zero weights, NaN, wrong shape)."""


def normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalize along `axis`; a zero vector is an error (it has no direction)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    if not np.all(np.isfinite(vectors)) or np.any(norms <= 1e-12):
        raise FusionError("cannot normalize a zero or non-finite vector")
    return (vectors / norms).astype(np.float32)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights for every channel, finite and >= 0, not all zero."""
    out = {}
    for channel in CHANNELS:
        value = float(weights.get(channel, 0.0))
        if not np.isfinite(value) or value < 0:
            raise FusionError(f"weight of channel {channel!r} must be a finite number >= 0, got {value}")
        out[channel] = value
    if sum(out.values()) <= 0:
        raise FusionError("at least one channel weight must be > 0")
    return out


def fuse(channels: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """normalize(sum_c w_c * v_c) row-wise; channels map name -> [N, D] (or [D])."""
    weights = check_weights(weights)
    total = None
    for channel in CHANNELS:
        if weights[channel] == 0:
            continue
        term = weights[channel] * np.asarray(channels[channel], dtype=np.float32)
        total = term if total is None else total + term
    return normalize(total)


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


def weighted_score(channel_scores: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum_c w_c s_c / sum_c w_c over the channels with weight > 0."""
    weights = check_weights(weights)
    total = sum(weights.values())
    return float(sum(weights[c] * channel_scores[c] for c in CHANNELS if weights[c] > 0) / total)


def rrf_scores(rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: id -> sum_c w_c / (k + rank_c), rank 1-based; best first."""
    weights = check_weights(weights)
    scores: dict[str, float] = {}
    for channel, ids in rankings.items():
        weight = weights.get(channel, 0.0)
        if weight == 0:
            continue
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))


def channel_scores(query: np.ndarray, vectors: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Cosine of a normalized query to each stored (normalized) vector."""
    q = np.asarray(query, dtype=np.float32)
    return {name: float(np.dot(q, np.asarray(vec, dtype=np.float32))) for name, vec in vectors.items()}


def caption_text(caption: str, tags: Sequence[str]) -> str:
    """The text the caption channel embeds: the caption, then the tags."""
    parts = [caption.strip()] if caption and caption.strip() else []
    if tags:
        parts.append(", ".join(tags))
    return ". ".join(parts)


def title_text(title: str, description: str) -> str:
    """The text the title channel embeds."""
    parts = [p.strip() for p in (title, description) if p and p.strip()]
    return ". ".join(parts)
