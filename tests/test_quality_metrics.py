"""Metrics of the quality harness against values computed by hand, and exact ranking of ablations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from quality.reference import Calibration, Scores, fused, rrf, top_k
from quality.tuning import Variant, grid_search, simplex
from quality.metrics import (bootstrap_ci, brute_force_rankings, hit_at_k, ndcg_at_k, per_query, precision_at_k,
                             recall_at_k, reciprocal_rank, summarize)

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


def _scores(present_title=(True, True, True)):
    # one query, three products; cosines per channel chosen so that each channel prefers another product
    channel = {
        "image": np.array([[0.9, 0.1, 0.5]]),
        "title": np.array([[0.1, 0.9, 0.6]]),
        "caption": np.array([[0.0, 0.2, 0.8]]),
        "keyword": np.array([[0.0, 0.0, 0.0]]),
    }
    present = {c: np.ones(3, bool) for c in channel}
    present["title"] = np.asarray(present_title)
    return Scores(channel, present, np.array([-1]))


def test_fused_is_the_weighted_cosine_sum_renormalized_over_present_channels():
    s = _scores()
    w = {"image": 0.5, "title": 0.3, "caption": 0.2}
    got = fused(s, w)[0]
    # p0 = .45 + .03 + 0 = .48; p1 = .05 + .27 + .04 = .36; p2 = .25 + .18 + .16 = .59
    assert got == pytest.approx([0.48, 0.36, 0.59])
    # unnormalized weights give the same scores (normalized to sum 1)
    assert fused(s, {c: 10 * v for c, v in w.items()})[0] == pytest.approx(got)
    # p1 has no title: its score is (.5*.1 + .2*.2) / .7, not .05 + .04 and not a faked title cosine
    missing = fused(_scores((True, False, True)), w)[0]
    assert missing == pytest.approx([0.48, 0.09 / 0.7, 0.59])
    assert top_k(fused(s, w), s.exclude, 3).tolist() == [[2, 0, 1]]


def test_rrf_by_hand_and_exclusion():
    s = _scores()
    w = {"image": 0.5, "title": 0.3, "caption": 0.2}
    # ranks: image p0 1, p2 2, p1 3; title p1 1, p2 2, p0 3; caption p2 1, p1 2, p0 3
    expect = [0.5 / 61 + 0.3 / 63 + 0.2 / 63, 0.5 / 63 + 0.3 / 61 + 0.2 / 62, 0.5 / 62 + 0.3 / 62 + 0.2 / 61]
    assert rrf(s, w)[0] == pytest.approx(expect)
    own = Scores(s.channel, s.present, np.array([2]))  # the query product is p2
    assert 2 not in top_k(fused(own, w), own.exclude, 2)[0]


def test_calibration_zscores_each_channel():
    s = _scores()
    cal = Calibration.fit({"text": s})
    z = cal.apply("text", s)
    for c in ("image", "title", "caption"):
        assert z.channel[c].mean() == pytest.approx(0.0, abs=1e-9) and z.channel[c].std() == pytest.approx(1.0)
    assert Variant("v", {"image": 1.0}, calibrated=True).scores(s, "text", cal).argmax() == 0


def test_grid_search_finds_the_channel_that_ranks_the_relevant_product():
    assert len(simplex(("a", "b", "c"), 0.1)) == 66 and len(simplex(("a", "b", "c", "d"), 0.1)) == 286
    s = _scores()
    weights, value, trials = grid_search(s, [{"p1"}], ["p0", "p1", "p2"], "text", ("image", "title", "caption"), None, False,
                                         metric="nDCG@10", step=0.5)
    assert value == 1.0 and weights["title"] >= 0.5
    assert len(trials) == 6


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_queries():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(2000)
    m, lo, hi = bootstrap_ci(small, 1000)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_ci(large, 1000)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_ci(np.ones(10))[1:] == (1.0, 1.0)
    values = per_query([["a", "b"], ["c"]], [{"a"}, {"x"}])
    assert values["P@10"].tolist() == [0.1, 0.0] and values["R@10"].tolist() == [1.0, 0.0]


def _broken_sign(s, w):
    return fused(Scores({**s.channel, "image": -s.channel["image"]}, s.present, s.exclude), w)


def _broken_weight(s, w):
    return fused(s, {**w, "caption": 1.0})


@pytest.mark.parametrize("fusion, sound", [(fused, True), (_broken_sign, False), (_broken_weight, False)])
def test_fusion_check_catches_a_broken_fusion(fusion, sound):
    """The by-hand fusion check above, as a function: the real fusion passes, a broken one does not."""
    def check():
        s = _scores()
        assert fusion(s, {"image": 0.5, "title": 0.3, "caption": 0.2})[0] == pytest.approx([0.48, 0.36, 0.59])
        assert fusion(s, {"image": 1.0, "title": 0.0, "caption": 0.0})[0] == pytest.approx([0.9, 0.1, 0.5])

    if sound:
        check()
    else:
        with pytest.raises(AssertionError):
            check()
