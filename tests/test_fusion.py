"""gateway/fusion.py against the formulas its docstring and docs/gateway.md state."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from gateway import fusion


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_check_weights_normalizes_and_refuses():
    assert fusion.check_weights({"image": 2, "title": 1, "caption": 1}) == {"image": 0.5, "title": 0.25, "caption": 0.25, "keyword": 0.0}
    for weights in ({"image": 0, "title": 0}, {"image": -1, "title": 1}, {"image": float("nan")}, {"colour": 1.0}):
        with pytest.raises(fusion.FusionError):
            fusion.check_weights(weights)


@hsettings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.floats(0, 5), min_size=3, max_size=3).filter(lambda w: sum(w) > 1e-3),
    present=st.lists(st.booleans(), min_size=2, max_size=2),
    seed=st.integers(0, 10_000),
)
def test_fused_vector_inner_product_is_the_weighted_score(weights, present, seed):
    """q . u(p) == sum_{c in P} w_c cos(q, v_c) / sum_{c in P} w_c, for any weights and any missing channels."""
    rng = np.random.default_rng(seed)
    w = fusion.check_weights(dict(zip(fusion.DENSE_CHANNELS, weights)))
    channels = {c: np.stack([unit(rng.normal(size=16))]) for c in fusion.DENSE_CHANNELS}
    have = {"image"} | {c for c, on in zip(("title", "caption"), present) if on}
    q = unit(rng.normal(size=16))
    u = fusion.fused_vectors(channels, [have], w)[0]
    cosines = {c: float(q @ channels[c][0]) for c in fusion.DENSE_CHANNELS}
    expected = fusion.weighted_score(cosines, have, w)
    total = sum(w[c] for c in have)
    if total <= 0:
        assert expected is None and not np.any(u)
        return
    by_hand = sum(w[c] * cosines[c] for c in have) / total
    assert expected == pytest.approx(by_hand, abs=1e-6)
    assert float(q @ u) == pytest.approx(by_hand, abs=1e-5)


def test_absent_channel_is_renormalized_away_not_scored_as_zero():
    q, v = unit([1, 0]), unit([1, 0])
    scores = {"image": float(q @ v), "title": 0.0, "caption": 0.0}
    w = fusion.check_weights({"image": 0.5, "title": 0.3, "caption": 0.2})
    assert fusion.weighted_score(scores, {"image"}, w) == pytest.approx(1.0)  # not 0.5
    assert fusion.weighted_score(scores, {"image", "title", "caption"}, w) == pytest.approx(0.5)
    assert fusion.weighted_score(scores, {"title"}, {"image": 1.0, "title": 0.0, "caption": 0.0, "keyword": 0.0}) is None


@hsettings(max_examples=200, deadline=None)
@given(bm25=st.floats(0, 1e6, allow_nan=False), pivot=st.floats(0.01, 100), exponent=st.floats(0.1, 32))
def test_keyword_score_is_bm25_saturated_around_the_pivot(bm25, pivot, exponent):
    """s = b^e / (b^e + pivot^e) (docs/gateway.md), in [0, 1], 0 without a match, increasing in b."""
    got = fusion.keyword_score(bm25, pivot, exponent)
    expected = 0.0 if bm25 == 0 else float(np.exp(exponent * np.log(bm25)) / (np.exp(exponent * np.log(bm25)) + np.exp(exponent * np.log(pivot))))
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(expected if np.isfinite(expected) else 1.0, abs=1e-9)
    assert fusion.keyword_score(bm25 * 1.5 + 0.1, pivot, exponent) >= got


def test_keyword_score_examples_and_refusals():
    assert fusion.keyword_score(11.0, 11.0, 8.0) == pytest.approx(0.5)  # the pivot scores one half
    assert fusion.keyword_score(22.0, 11.0, 1.0) == pytest.approx(2 / 3)
    assert fusion.keyword_score(0.0, 11.0, 8.0) == 0.0
    assert fusion.keyword_score(1e-300, 11.0, 8.0) == 0.0  # no overflow
    for pivot, exponent in ((0.0, 8.0), (11.0, 0.0), (-1.0, 8.0)):
        with pytest.raises(fusion.FusionError):
            fusion.keyword_score(5.0, pivot, exponent)


def test_dense_part_and_same_weights():
    w = fusion.check_weights({"image": 0.4, "title": 0.2, "caption": 0.2, "keyword": 0.2})
    assert fusion.dense_part(w) == pytest.approx({"image": 0.5, "title": 0.25, "caption": 0.25})
    assert fusion.dense_part({"keyword": 1.0}) is None
    assert fusion.same_weights({"image": 0.5, "title": 0.5}, {"image": 0.5, "title": 0.5, "caption": 0.0})
    assert not fusion.same_weights({"image": 0.5, "title": 0.5}, {"image": 0.6, "title": 0.4})


def test_rrf_formula():
    fused = fusion.rrf_scores({"image": ["a", "b"], "title": ["b", "c"]}, {"image": 1 / 3, "title": 2 / 3}, k=60)
    assert fused["b"] == pytest.approx((1 / 3) / 62 + (2 / 3) / 61)
    assert fused["a"] == pytest.approx((1 / 3) / 61) and fused["c"] == pytest.approx((2 / 3) / 62)
    assert list(fused) == ["b", "c", "a"]


def test_compose_query():
    image, text = unit([1, 0, 0]), unit([0, 1, 0])
    assert np.allclose(fusion.compose_query(image, None, 0.5), image)
    assert np.allclose(fusion.compose_query(None, text, 0.5), text)
    assert np.allclose(fusion.compose_query(image, text, 0.5), unit([1, 1, 0]))
    with pytest.raises(fusion.FusionError):
        fusion.compose_query(None, None, 0.5)


def test_channel_texts_are_empty_without_content():
    assert fusion.title_text("", "  ") == "" and fusion.caption_text("", []) == "" and fusion.caption_text(" ", ["", " "]) == ""
    assert fusion.title_text("Boot", "leather") == "Boot. leather" and fusion.caption_text("a boot", ["black"]) == "a boot. black"
