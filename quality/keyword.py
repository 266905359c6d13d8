"""The gateway's keyword channel on the validation split, and its hybrid chosen there (issue 13).

The BM25 is Milvus' own: the validation catalog is written into a Milvus Lite collection by the gateway's
store code (gateway/store.py: schema, analyzer, BM25 function) with the gateway's keyword text
(gateway/rows.py: id, title, brand, description, caption, tags; the tags are the reference tagger's, which
the gateway's agree with), and every text query is searched against it. The dense side is the reference's
(the checkpoint in PyTorch). On those scores a grid chooses the keyword score's pivot and exponent
(s = b^e / (b^e + pivot^e), gateway/fusion.py) and the keyword weight of the hybrid
(dense part = the gateway's text-query weights scaled by 1 - w), by the text mix's mean nDCG@10.
Test queries never reach this module.
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from quality.metrics import per_query
from quality.reference import Scores, fused
from quality.tuning import rank

PIVOTS = tuple(float(p) for p in range(6, 17))  # Milvus BM25 of one rare term on a few thousand products: 7-12
EXPONENTS = (1.0, 2.0, 4.0, 8.0, 16.0)


def saturate(bm25: np.ndarray, pivot: float, exponent: float) -> np.ndarray:
    """b^e / (b^e + pivot^e) elementwise, 0 where b = 0 (written again here: the gateway's is gateway/fusion.py)."""
    b = np.asarray(bm25, np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(b > 0, 1.0 / (1.0 + np.exp(exponent * (np.log(pivot) - np.log(np.where(b > 0, b, 1.0))))), 0.0)


def milvus_bm25(ids: Sequence[str], products: Sequence[Any], tags: Sequence[Sequence[str]], query_texts: Sequence[str],
                workdir: Path) -> np.ndarray:
    """[Q, N] Milvus BM25 of each query text against each product's keyword text (0 = no term matches)."""
    from gateway.filters import ProductFilter
    from gateway.rows import Channels, build_row
    from gateway.store import MilvusConfig, MilvusStore
    from retrieval.v1 import retrieval_pb2 as pb

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    dim = 2  # the dense fields are not searched here
    store = MilvusStore(MilvusConfig(uri=str(workdir / "keyword.db"), collection="products", dim=dim, index_type="FLAT"))
    store.connect()
    try:
        zero = np.zeros(dim, np.float32)
        rows = [build_row(pb.Product(id=p.id, title=p.title, description=p.description, brand=p.brand), Channels({}, "", list(t)), zero, dim)
                for p, t in zip(products, tags)]
        for start in range(0, len(rows), 1000):
            store.upsert(rows[start:start + 1000])
        position = {pid: i for i, pid in enumerate(ids)}
        out = np.zeros((len(query_texts), len(ids)), np.float32)
        for row, text in enumerate(query_texts):
            if text.strip():
                for pid, score, _mask in store.keyword(text, len(ids), ProductFilter()):
                    out[row, position[pid]] = score
        return out
    finally:
        store.close()


def tune_keyword(s: Scores, bm25: np.ndarray, relevant: Sequence[set], kinds: Sequence[str], ids: Sequence[str],
                 dense_weights: Mapping[str, float], step: float, log: Callable[[str], None] = print) -> dict[str, Any]:
    """The (pivot, exponent, keyword weight) with the best mean nDCG@10 on these (validation) queries; ties go to
    the earlier grid point. `kinds[i]` is query i's kind (text | brand_sku), for the per-kind figures."""
    kinds = np.asarray(kinds)
    dense = {c: float(w) for c, w in dense_weights.items() if c != "keyword"}

    def evaluate(hybrid: Scores, w: float) -> np.ndarray:
        weights = {**{c: (1.0 - w) * v for c, v in dense.items()}, "keyword": w}
        return per_query(rank(fused(hybrid, weights), hybrid, ids, 10), relevant)["nDCG@10"]

    def summary(values: np.ndarray) -> dict[str, float]:
        return {"text": float(values[kinds == "text"].mean()), "brand_sku": float(values[kinds == "brand_sku"].mean()),
                "text mix": float(values.mean())}

    vector = summary(per_query(rank(fused(s, dense), s, ids, 10), relevant)["nDCG@10"])
    keyword_weights = np.round(np.arange(step, 1.0 - 1e-9, step), 6)
    best: tuple[float, tuple[float, float, float], np.ndarray] | None = None
    for pivot, exponent in itertools.product(PIVOTS, EXPONENTS):
        hybrid = Scores({**s.channel, "keyword": saturate(bm25, pivot, exponent)},
                        {**s.present, "keyword": np.ones(len(ids), bool)}, s.exclude)  # the id is always keyword text
        for w in keyword_weights:
            values = evaluate(hybrid, float(w))
            if best is None or values.mean() > best[0]:
                best = (float(values.mean()), (pivot, exponent, float(w)), values)
    assert best is not None
    pivot, exponent, w = best[1]
    log(f"[tune] gateway keyword channel: pivot {pivot}, exponent {exponent}, keyword weight {w} -> text mix nDCG@10 {best[0]:.3f}")
    return {"pivot": pivot, "exponent": exponent, "keyword_weight": w,
            "weights": {**{c: round((1.0 - w) * v, 6) for c, v in dense.items()}, "keyword": w},
            "validation nDCG@10": summary(best[2]), "validation vector only nDCG@10": vector,
            "grid": {"pivots": list(PIVOTS), "exponents": list(EXPONENTS), "keyword weights": keyword_weights.tolist()}}
