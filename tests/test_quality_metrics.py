"""Metrics of the quality harness against values computed by hand, and exact ranking of ablations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from quality.eval import Ablation, Query, exact_rankings, table
from quality.metrics import (brute_force_rankings, hit_at_k, ndcg_at_k, precision_at_k, recall_at_k,
                             reciprocal_rank, summarize)

RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "d", "x"}  # x is never retrieved


def test_recall_precision_hit_by_hand():
    assert recall_at_k(RANKED, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKED, RELEVANT, 10) == pytest.approx(2 / 10)  # a short list: missing slots are misses
    assert hit_at_k(RANKED, RELEVANT, 1) == 0.0
    assert hit_at_k(RANKED, RELEVANT, 2) == 1.0


def test_mrr_and_ndcg_by_hand():
    assert reciprocal_rank(RANKED, RELEVANT) == 0.5
    assert reciprocal_rank(RANKED, {"zz"}) == 0.0
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # hits at ranks 2 and 4
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # 3 relevant ids at ranks 1..3
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RANKED, RELEVANT, 10) == pytest.approx(0.498189, abs=1e-6)
    assert ndcg_at_k(["b", "d", "x"], RELEVANT, 10) == pytest.approx(1.0)


def test_summarize_averages_queries():
    out = summarize([RANKED, ["x", "a"]], [RELEVANT, {"x"}], ks=(1, 5))
    assert out["hit@1"] == pytest.approx(0.5)
    assert out["mrr"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["recall@5"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert out["queries"] == 2
    with pytest.raises(ValueError):
        summarize([RANKED], [])


def test_brute_force_rankings_exact_order():
    items = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.9, 0.5, 0.0]], dtype=np.float32)
    assert brute_force_rankings(queries, items, 3).tolist() == [[1, 2, 0]]
    assert brute_force_rankings(items, items, 1, exclude_self=True).shape == (4, 1)


def test_exact_rankings_per_ablation_by_hand():
    ids = ["p0", "p1", "p2"]
    vectors = {  # 2-d vectors: each product wins a different channel
        "image": np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32),
        "title": np.array([[0, 1], [1, 0], [0.8, 0.6]], np.float32),
        "caption": np.array([[0, 1], [0, 1], [1, 0]], np.float32),
        "fused": np.array([[1, 0], [0, 1], [0.7, 0.7]], np.float32),
    }
    q = np.array([[1.0, 0.0]], np.float32)
    queries = [Query("text->image", "t", None, {"p0"})]
    image = exact_rankings(Ablation("i", "multi_vector", {"image": 1, "title": 0, "caption": 0}), q, vectors, ids, queries, 3)
    title = exact_rankings(Ablation("t", "multi_vector", {"image": 0, "title": 1, "caption": 0}), q, vectors, ids, queries, 3)
    caption = exact_rankings(Ablation("c", "multi_vector", {"image": 0, "title": 0, "caption": 1}), q, vectors, ids, queries, 2)
    assert image == [["p0", "p2", "p1"]]
    assert title == [["p1", "p2", "p0"]]
    assert caption[0][0] == "p2"
    # weighted 0.5/0.3/0.2: p0 = .5, p1 = .3, p2 = .5*.6 + .3*.8 + .2*1 = .74
    assert exact_rankings(Ablation("w", "multi_vector"), q, vectors, ids, queries, 3) == [["p2", "p0", "p1"]]
    # the query product itself is excluded
    own = [Query("image->image", "", "p2", {"p0"}, exclude="p2")]
    assert "p2" not in exact_rankings(Ablation("w", "multi_vector"), q, vectors, ids, own, 3)[0]
    # rrf (k=60), ranks: image p0 1, p2 2, p1 3; title p1 1, p2 2, p0 3; caption p2 1, p0 2, p1 3 (tie kept in order)
    # p0 = .5/61 + .3/63 + .2/62 = .016185; p2 = .5/62 + .3/62 + .2/61 = .016182; p1 = .5/63 + .3/61 + .2/63 = .016030
    rrf = exact_rankings(Ablation("r", "multi_vector", combine="rrf"), q, vectors, ids, queries, 3)
    assert rrf == [["p0", "p2", "p1"]]


def test_table_has_a_row_per_result():
    metrics = summarize([RANKED], [RELEVANT])
    rows = [{"task": "text->image", "ablation": "image only", "gateway": metrics, "exact": metrics, "ms_per_query": 1.0}]
    text = table(rows)
    assert "image only" in text and text.count("\n") == 2
