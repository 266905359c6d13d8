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
        rows.append(build_row(pb.Product(id=pid, title=f"product {pid}"), Channels(vectors), fused, DIM))
    store.upsert(rows)
    yield store
    store.close()


def top(store: MilvusStore, candidates: int, k: int = 1) -> list[str]:
    core = Core(load_settings([], multi_vector_candidates=candidates), store=store)
    plan = Plan(pb.SEARCH_MODE_MULTI_VECTOR, "weighted", fusion.check_weights(WEIGHTS), "text")
    hits = asyncio.run(Candidates(core, store, unit(1, 1, 0, 0), "", plan, ProductFilter(), k, 60).run())
    return [row["id"] for row, _, _ in hits]


def test_the_candidate_count_decides_what_exact_rescoring_can_find(store):
    assert top(store, candidates=1) in (["A"], ["C"])  # B is in neither channel's first candidate
    assert top(store, candidates=2) == ["B"]  # second in both lists: the union holds it, rescoring ranks it first
