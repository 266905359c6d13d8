"""quality/keyword.py: Milvus' BM25 of a catalog through the gateway's store code, the saturation written again
agrees with the gateway's, and the grid picks the keyword settings that serve both kinds of text query."""
from __future__ import annotations

import numpy as np
import pytest

from gateway import fusion
from quality.evalset import EvalProduct
from quality.keyword import milvus_bm25, saturate, tune_keyword
from quality.reference import Scores


def test_saturate_agrees_with_the_gateway():
    b = np.array([[0.0, 1e-300, 0.5, 11.0, 30.0, 1e6]])
    for pivot, exponent in ((11.0, 8.0), (2.0, 1.0), (6.0, 16.0)):
        expected = [fusion.keyword_score(float(x), pivot, exponent) for x in b[0]]
        assert saturate(b, pivot, exponent)[0] == pytest.approx(expected, abs=1e-12)


def test_milvus_bm25_scores_the_gateway_keyword_text(tmp_path):
    products = [EvalProduct(id="p-1", index=0, label=0, title="Velmor slim top 4411-B", description="", brand="Velmor"),
                EvalProduct(id="p-2", index=1, label=1, title="soft jumper", description="Colour: red."),
                EvalProduct(id="p-3", index=2, label=2, title="", description="")]
    tags = [["shirt"], ["sweater", "wool"], ["sandal"]]
    bm25 = milvus_bm25([p.id for p in products], products, tags, ["4411-B", "sandals", "p-2", "nothing matches"], tmp_path / "kw")
    assert bm25.shape == (4, 3)
    assert bm25[0, 0] > 0 and bm25[0, 1] == bm25[0, 2] == 0  # the SKU, analyzed as the gateway does
    assert bm25[1, 2] > 0 and bm25[1, :2].sum() == 0  # the tags are keyword text (stemmed: sandals -> sandal)
    assert bm25[2, 1] > 0  # the id is keyword text
    assert not bm25[3].any()


def test_tune_keyword_finds_a_hybrid_that_serves_both_kinds():
    """Two semantic queries (the dense channel knows, BM25 has weak common-word matches on the wrong products) and
    two SKU queries (the dense channel is noise, BM25 has one strong match): the chosen settings keep the semantic
    queries and find the SKUs, which vector-only cannot."""
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"p{i:02d}" for i in range(n)]
    image = rng.uniform(0.1, 0.2, (4, n))
    image[0, :5] += 0.3  # semantic query 0: products 0-4
    image[1, 5:10] += 0.3  # semantic query 1: products 5-9
    bm25 = np.zeros((4, n))
    bm25[0, 30:35] = 3.0  # weak matches on irrelevant products
    bm25[1, 35:40] = 3.0
    bm25[2, 20], bm25[3, 21] = 14.0, 15.0  # the SKUs
    relevant = [set(ids[:5]), set(ids[5:10]), {ids[20]}, {ids[21]}]
    present = {c: np.ones(n, bool) for c in ("image", "title", "caption", "keyword")}
    s = Scores({"image": image, "title": np.zeros((4, n)), "caption": np.zeros((4, n)), "keyword": np.zeros((4, n))}, present, -np.ones(4, np.int64))
    chosen = tune_keyword(s, bm25, relevant, ["text", "text", "brand_sku", "brand_sku"], ids, {"image": 1.0, "keyword": 0.0}, 0.1, log=lambda _m: None)
    assert chosen["validation vector only nDCG@10"]["brand_sku"] == 0.0
    assert chosen["validation nDCG@10"]["brand_sku"] == pytest.approx(1.0)
    assert chosen["validation nDCG@10"]["text"] == pytest.approx(chosen["validation vector only nDCG@10"]["text"])
    assert 0 < chosen["keyword_weight"] < 1 and chosen["weights"]["image"] == pytest.approx(1 - chosen["keyword_weight"])
    assert chosen["pivot"] in chosen["grid"]["pivots"] and chosen["exponent"] in chosen["grid"]["exponents"]
