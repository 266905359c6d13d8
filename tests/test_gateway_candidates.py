"""`multi_vector_candidates` decides what exact rescoring can find (gateway/search.py Candidates on a real
Milvus Lite store, FLAT index, no models): a product that is no channel's best but the best of the weighted
sum is found only when the candidate lists reach it."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from gateway import fusion
from gateway.core import Core
from gateway.filters import ProductFilter
from gateway.rows import Channels, build_row
from gateway.search import Candidates, Plan
from gateway.settings import load_settings
from gateway.store import MilvusConfig, MilvusStore
from retrieval.v1 import retrieval_pb2 as pb

DIM = 4
WEIGHTS = {"image": 0.5, "title": 0.5, "caption": 0.0, "keyword": 0.0}


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A (image e1, title e4): image's best; C (image e4, title e2): title's best; B: second in both, best overall."""
    config = MilvusConfig(uri=str(tmp_path_factory.mktemp("candidates") / "c.db"), collection="products", dim=DIM, index_type="FLAT")
    store = MilvusStore(config)
    store.connect()
    products = {
        "A": {"image": unit(1, 0, 0, 0), "title": unit(0, 0, 0, 1)},
        "B": {"image": unit(1, 0, 0, 0.8), "title": unit(0, 1, 0, 0.8)},
        "C": {"image": unit(0, 0, 0, 1), "title": unit(0, 1, 0, 0)},
    }
    rows = []
    for pid, vectors in products.items():
        fused = fusion.fused_vectors({c: v[None] for c, v in vectors.items()}, [set(vectors)], WEIGHTS)[0]
        title = f"product {pid}" + (" quokka" if pid == "C" else "")  # one product carries the keyword
        rows.append(build_row(pb.Product(id=pid, title=title), Channels(vectors), fused, DIM))
    store.upsert(rows)
    yield store
    store.close()


def search(store: MilvusStore, candidates: int, k: int = 1, weights=WEIGHTS, text: str = "", mode=pb.SEARCH_MODE_MULTI_VECTOR, **settings):
    core = Core(load_settings([], multi_vector_candidates=candidates, **settings), store=store)
    plan = Plan(mode, "weighted", fusion.check_weights(weights), "text")
    return asyncio.run(Candidates(core, store, unit(1, 1, 0, 0), text, plan, ProductFilter(), k, 60).run())


def top(store: MilvusStore, candidates: int, k: int = 1) -> list[str]:
    return [row["id"] for row, _, _ in search(store, candidates, k)]


def test_the_candidate_count_decides_what_exact_rescoring_can_find(store):
    assert top(store, candidates=1) in (["A"], ["C"])  # B is in neither channel's first candidate
    assert top(store, candidates=2) == ["B"]  # second in both lists: the union holds it, rescoring ranks it first


HYBRID = {"image": 0.5, "title": 0.0, "caption": 0.0, "keyword": 0.5}


@pytest.mark.parametrize("candidates", [1, 300])
def test_keyword_scores_are_exact_whether_or_not_the_bm25_list_is_complete(store, candidates):
    """One product matches the keyword: at 300 candidates the BM25 list is complete, so the others score 0
    without a restricted search; at 1 the list is full and the rest come from one. Both give the same BM25."""
    hits = search(store, candidates, k=3, weights=HYBRID, text="quokka", mode=pb.SEARCH_MODE_FUSED)
    bm25 = {row["id"]: scores["bm25"] for row, _, scores in hits}
    assert bm25["C"] > 0 and all(bm25[i] == 0.0 for i in bm25 if i != "C"), bm25
    for row, score, scores in hits:
        dense = float(np.dot(unit(1, 1, 0, 0), np.asarray(row["fused_vec"], np.float32)))
        assert score == pytest.approx(0.5 * dense + 0.5 * scores["keyword"], abs=1e-5)


@pytest.mark.parametrize("pivot, exponent", [(11.0, 8.0), (0.5, 1.0), (3.0, 2.0)])
def test_keyword_pivot_and_exponent_set_the_keyword_score(store, pivot, exponent):
    """`keyword_pivot` / `keyword_exponent` decide the keyword score: b^e / (b^e + pivot^e) of the same BM25."""
    hits = search(store, 300, k=3, weights=HYBRID, text="quokka", mode=pb.SEARCH_MODE_FUSED, keyword_pivot=pivot, keyword_exponent=exponent)
    scores = next(s for row, _, s in hits if row["id"] == "C")
    b = scores["bm25"]
    assert scores["keyword"] == pytest.approx(b**exponent / (b**exponent + pivot**exponent), abs=1e-9)


@pytest.mark.parametrize("rows_max", [64, 0])
@pytest.mark.parametrize("candidates", [1, 2, 300])
@pytest.mark.parametrize("text, keyword_weight", [("quokka", 0.5), ("quokka product", 0.2), ("product", 0.9), ("nothing", 0.5)])
def test_bounded_hybrid_equals_scoring_every_product(store, candidates, text, keyword_weight, rows_max, monkeypatch):
    """The fused plan's hybrid prunes candidates by score bounds and reads only the rest (or, with more than
    BOUNDED_ROWS_MAX left, rescores both lists): whatever the candidate depth, its top_k equals the formula
    applied to every product (BM25 from an unrestricted search)."""
    import gateway.search

    monkeypatch.setattr(gateway.search, "BOUNDED_ROWS_MAX", rows_max)
    weights = {"image": 1.0 - keyword_weight, "title": 0.0, "caption": 0.0, "keyword": keyword_weight}
    settings = load_settings([])
    bm25 = {i: b for i, b, _ in store.keyword(text, 10, ProductFilter())}
    expected = []
    for row in store.get(["A", "B", "C"], True):
        dense = float(np.dot(unit(1, 1, 0, 0), np.asarray(row["fused_vec"], np.float32)))
        keyword = fusion.keyword_score(bm25.get(row["id"], 0.0), settings.keyword_pivot, settings.keyword_exponent)
        expected.append(((1 - keyword_weight) * dense + keyword_weight * keyword, row["id"]))
    expected.sort(key=lambda pair: (-pair[0], pair[1]))
    hits = search(store, candidates, k=2, weights=weights, text=text, mode=pb.SEARCH_MODE_FUSED)
    assert [row["id"] for row, _, _ in hits] == [i for _, i in expected[:2]]
    assert [score for _, score, _ in hits] == pytest.approx([s for s, _ in expected[:2]], abs=1e-6)
