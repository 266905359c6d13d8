"""Fusion variants on reference scores, and their weights chosen on the validation split by grid search.

A variant maps a query set's `Scores` to a ranking. Grid: every weight vector on the simplex with step
`step` over the variant's channels (66 vectors for three channels at 0.1, 286 for four), scored by the
mean P@10 (or nDCG@10) of the validation queries of one query type; ties go to the earlier grid point
(the grid starts from the most image-heavy vectors). Test queries never reach this module's search.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from quality.metrics import per_query
from quality.reference import Calibration, Scores, fused, rrf, top_k


def simplex(channels: Sequence[str], step: float = 0.1) -> list[dict[str, float]]:
    n = int(round(1 / step))
    out = []
    for combo in itertools.product(range(n, -1, -1), repeat=len(channels) - 1):
        if sum(combo) <= n:
            weights = [c / n for c in combo] + [(n - sum(combo)) / n]
            out.append({c: round(w, 6) for c, w in zip(channels, weights)})
    return out


def rank(scores: np.ndarray, s: Scores, ids: Sequence[str], k: int) -> list[list[str]]:
    """Ids of the best k per query; ties by product id, as the gateway orders them."""
    top = top_k(scores, s.exclude, k, tie=np.argsort(np.argsort(np.asarray(ids))))
    return [[ids[j] for j in row if np.isfinite(scores[r, j])] for r, row in enumerate(top)]


@dataclass(frozen=True)
class Variant:
    """A fusion method: weights, calibrated or not, weighted sum or RRF."""

    name: str
    weights: Mapping[str, float]
    calibrated: bool = False
    combine: str = "weighted"
    depth: int | None = None  # rrf: candidates per channel

    def scores(self, s: Scores, qtype: str, calibration: Calibration | None) -> np.ndarray:
        raw = s
        if self.calibrated:
            if calibration is None:
                raise ValueError(f"{self.name}: calibrated variant without calibration statistics")
            s = calibration.apply(qtype, s)
        if self.combine == "hybrid_rrf":
            return hybrid_rrf(s, raw.channel["keyword"], self.weights)
        return rrf(s, self.weights, depth=self.depth) if self.combine == "rrf" else fused(s, self.weights)

    def rankings(self, s: Scores, qtype: str, calibration: Calibration | None, ids: Sequence[str], k: int = 10) -> list[list[str]]:
        return rank(self.scores(s, qtype, calibration), s, ids, k)


def hybrid_rrf(s: Scores, bm25: np.ndarray, weights: Mapping[str, float], k: int = 60) -> np.ndarray:
    """RRF of two lists: the weighted vector score (image/title/caption weights, on `s`) and BM25 (`bm25`: the
    products that match a query term only), the lists weighted 1 - w_keyword and w_keyword."""
    vector = fused(s, {c: w for c, w in weights.items() if c != "keyword"})
    keyword = np.where(bm25 > 0, bm25, -np.inf)
    lists = Scores({"vector": vector, "keyword": keyword}, {"vector": np.ones(vector.shape[1], bool), "keyword": s.present["keyword"]}, s.exclude)
    w = float(weights.get("keyword", 0.0))
    return rrf(lists, {"vector": 1.0 - w, "keyword": w}, k)


def grid_search(s: Scores, relevants: Sequence[set], ids: Sequence[str], qtype: str, channels: Sequence[str],
                calibration: Calibration | None, calibrated: bool, metric: str = "P@10", step: float = 0.1,
                progress: Callable[[str], None] | None = None) -> tuple[dict[str, float], float, list[tuple[dict, float]]]:
    """Best weights on these (validation) queries; returns (weights, value, every grid point with its value)."""
    trials = []
    for weights in simplex(channels, step):
        variant = Variant("grid", weights, calibrated)
        value = float(per_query(variant.rankings(s, qtype, calibration, ids), relevants)[metric].mean())
        trials.append((weights, value))
    best = max(range(len(trials)), key=lambda i: (trials[i][1], -i))
    if progress:
        progress(f"[tune] {qtype} {'calibrated' if calibrated else 'raw'} over {'/'.join(channels)}: {trials[best][0]} -> {metric} {trials[best][1]:.3f}")
    return trials[best][0], trials[best][1], trials
