"""Ranking metrics on ranked id lists: recall@K, precision@K, MRR, nDCG@K (binary relevance).

Pure numpy/python so the harness can score gateway results and brute-force results the same way.
A query is a ranked list of retrieved ids plus the set of relevant ids.
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Sequence

import numpy as np

Ranking = Sequence[Hashable]
Relevant = Iterable[Hashable]


def recall_at_k(ranked: Ranking, relevant: Relevant, k: int) -> float:
    """Share of the relevant ids found in the top k (1.0 when there is nothing to find is avoided: 0)."""
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(ranked[:k])) / len(rel)


def hit_at_k(ranked: Ranking, relevant: Relevant, k: int) -> float:
    """1 when any relevant id is in the top k (the 'recall@K' of CLIP papers with one positive)."""
    rel = set(relevant)
    return float(any(item in rel for item in ranked[:k]))


def precision_at_k(ranked: Ranking, relevant: Relevant, k: int) -> float:
    """Relevant ids among the top k, divided by k (a short list counts its missing slots as misses)."""
    rel = set(relevant)
    return sum(1 for item in ranked[:k] if item in rel) / k


def reciprocal_rank(ranked: Ranking, relevant: Relevant) -> float:
    rel = set(relevant)
    for position, item in enumerate(ranked, start=1):
        if item in rel:
            return 1.0 / position
    return 0.0


def ndcg_at_k(ranked: Ranking, relevant: Relevant, k: int = 10) -> float:
    """Binary-gain nDCG: DCG = sum 1/log2(rank+1) over relevant hits, over the ideal DCG."""
    rel = set(relevant)
    if not rel:
        return 0.0
    dcg = sum(1.0 / math.log2(pos + 1) for pos, item in enumerate(ranked[:k], start=1) if item in rel)
    ideal = sum(1.0 / math.log2(pos + 1) for pos in range(1, min(k, len(rel)) + 1))
    return dcg / ideal


def summarize(rankings: Sequence[Ranking], relevants: Sequence[Relevant], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Mean of every metric over the queries: recall@K, hit@K, precision@K, MRR, nDCG@10."""
    if len(rankings) != len(relevants):
        raise ValueError(f"{len(rankings)} rankings but {len(relevants)} relevance sets")
    relevants = [set(r) for r in relevants]
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([recall_at_k(r, rel, k) for r, rel in zip(rankings, relevants)]))
        out[f"hit@{k}"] = float(np.mean([hit_at_k(r, rel, k) for r, rel in zip(rankings, relevants)]))
        out[f"precision@{k}"] = float(np.mean([precision_at_k(r, rel, k) for r, rel in zip(rankings, relevants)]))
    out["mrr"] = float(np.mean([reciprocal_rank(r, rel) for r, rel in zip(rankings, relevants)]))
    out["ndcg@10"] = float(np.mean([ndcg_at_k(r, rel, 10) for r, rel in zip(rankings, relevants)]))
    out["queries"] = len(rankings)
    return out


def brute_force_rankings(queries: np.ndarray, items: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Exact top-k item indices by inner product (cosine on normalized vectors), best first."""
    scores = queries @ items.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(k, items.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


PER_QUERY = {
    "P@10": lambda ranked, rel: precision_at_k(ranked, rel, 10),
    "R@10": lambda ranked, rel: recall_at_k(ranked, rel, 10),
    "nDCG@10": lambda ranked, rel: ndcg_at_k(ranked, rel, 10),
}


def per_query(rankings: Sequence[Ranking], relevants: Sequence[Relevant]) -> dict[str, np.ndarray]:
    """P@10, R@10, nDCG@10 of each query (the arrays the bootstrap resamples)."""
    relevants = [set(r) for r in relevants]
    return {name: np.asarray([f(r, rel) for r, rel in zip(rankings, relevants)], np.float64) for name, f in PER_QUERY.items()}


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap over queries (resampled with replacement)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
