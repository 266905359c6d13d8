"""Store and gateway benchmark: Milvus Lite with the gateway's real schema at 100k products.

Part 1 (store): 100,000 products with dim-512 channel vectors shaped like real embeddings (a
Gaussian mixture around a few hundred unit centres; title/caption vectors near the image's),
inserted through gateway.store.MilvusStore (the gateway's code path). Reports the insert rate;
search p50/p95/p99 with and without filters; recall@10 of the index against exact search
(numpy brute force on the same vectors and the same filter); for fused and multi_vector mode.
Filters: a category (5% of products, correlated with the query's cluster, the hard case for an
IVF index), a price range (30%, uncorrelated), in-stock (90%), a brand (1%, uncorrelated).

Part 2 (gateway, optional with --model-repository): a real `python -m gateway` subprocess on a
small catalog; gateway overhead = end-to-end latency inside the gateway minus backend (inference)
and store time, from the `server-timing` trailing metadata; also the client-observed latency
minus the same, which adds gRPC transport and the Python client.

    python benchmarks/store_search.py --out docs/bench/store_search.json
    python benchmarks/store_search.py --n 100000 --model-repository /tmp/repo --out ...
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway import fusion  # noqa: E402
from gateway.filters import ProductFilter  # noqa: E402
from gateway.rows import Channels, build_row  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from gateway.store import MilvusConfig, MilvusStore  # noqa: E402

WEIGHTS = {"image": 0.5, "title": 0.3, "caption": 0.2, "keyword": 0.0}
# the hybrid the quality harness chose on validation: keyword 0.9, the dense part (0.1) in the fused vector's proportions
HYBRID = {"image": 0.05, "title": 0.03, "caption": 0.02, "keyword": 0.9}
NOUNS = ["sneaker", "boot", "dress", "coat", "shirt", "bag", "sandal", "trousers", "pullover", "tee"]
ADJECTIVES = ["classic", "slim", "soft", "light", "warm", "urban", "retro", "daily", "summer", "winter"]


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_catalog(n: int, dim: int, centres: int, seed: int = 0) -> dict:
    """Clustered channel vectors (cosine to own centre ~0.8, like CLIP neighbours), scalar fields, and
    titles of four words plus a SKU code (the keyword channel's case)."""
    rng = np.random.default_rng(seed)
    c = unit_rows(rng.normal(size=(centres, dim)))
    label = rng.integers(0, centres, n)
    noise = 0.75 / np.sqrt(dim)

    def around(base):
        return unit_rows(base + rng.normal(scale=noise, size=base.shape).astype(np.float32))

    image = around(c[label])
    title = around(image)
    caption = around(image)
    present = [{"image", "title", "caption"}] * n
    fused = fusion.fused_vectors({"image": image, "title": title, "caption": caption}, present, WEIGHTS)
    brand = np.array([f"brand{b}" for b in rng.integers(0, 100, n)])
    titles = [f"{brand[i]} {ADJECTIVES[rng.integers(10)]} {ADJECTIVES[rng.integers(10)]} {NOUNS[label[i] % 10]} sku{i}" for i in range(n)]
    return {
        "centres": c, "label": label, "image": image, "title": title, "caption": caption, "fused": fused,
        "category": np.array([f"cat{lab % 20}" for lab in label]), "brand": brand, "titles": titles,
        "price": rng.uniform(1, 500, n).round(2), "in_stock": rng.random(n) < 0.9, "noise": noise,
    }


def rows_of(cat: dict, start: int, stop: int, dim: int) -> list[dict]:
    """Rows built by gateway/rows.py, as the gateway's ingest builds them."""
    from retrieval.v1 import retrieval_pb2 as pb

    rows = []
    for i in range(start, stop):
        product = pb.Product(id=f"p{i}", title=cat["titles"][i], category=str(cat["category"][i]), brand=str(cat["brand"][i]),
                             price=float(cat["price"][i]), in_stock=bool(cat["in_stock"][i]))
        channels = Channels({c: cat[c][i] for c in ("image", "title", "caption")})
        rows.append(build_row(product, channels, cat["fused"][i], dim))
    return rows


def queries(cat: dict, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cat["centres"][rng.integers(0, len(cat["centres"]), count)]
    return unit_rows(base + rng.normal(scale=cat["noise"], size=base.shape).astype(np.float32))


FILTERS = {
    "none": (ProductFilter(), lambda c: None),
    "category (5%, correlated)": (ProductFilter(categories=["cat3"]), lambda c: c["category"] == "cat3"),
    "price<=150 (30%)": (ProductFilter(max_price=150.0), lambda c: c["price"] <= 150.0),
    "in_stock (90%)": (ProductFilter(in_stock=True), lambda c: c["in_stock"]),
    "brand (1%)": (ProductFilter(brands=["brand7"]), lambda c: c["brand"] == "brand7"),
}


def exact_top(scores: np.ndarray, mask, k: int = 10) -> list[int]:
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    top = np.argpartition(-scores, k)[:k]
    return [int(i) for i in top[np.argsort(-scores[top])] if np.isfinite(scores[i])]


class StoreSearch:
    """The gateway's own search path (gateway/search.py Candidates) on a store, without inference."""

    def __init__(self, store: MilvusStore, candidates: int) -> None:
        import asyncio

        from gateway.core import Core
        from gateway.settings import load_settings

        self.loop = asyncio.new_event_loop()
        self.core = Core(load_settings([], multi_vector_candidates=candidates), store=store)
        self.store = store

    def run(self, vector, text: str, weights: dict, mode: str, flt: ProductFilter, combine: str = "weighted", top_k: int = 10):
        from gateway.search import Candidates, Plan
        from retrieval.v1 import retrieval_pb2 as pb

        plan = Plan(pb.SEARCH_MODE_FUSED if mode == "fused" else pb.SEARCH_MODE_MULTI_VECTOR, combine, fusion.check_weights(weights), "text")
        return self.loop.run_until_complete(Candidates(self.core, self.store, vector, text, plan, flt, top_k, 60).run())


def timed(fn, runs):
    latencies, outs = [], []
    for args in runs:
        t = time.perf_counter()
        outs.append(fn(*args))
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies, outs


def bench_store(args) -> dict:
    cat = make_catalog(args.n, args.dim, args.centres)
    work = Path(tempfile.mkdtemp(prefix="store_bench_"))
    store = MilvusStore(MilvusConfig(uri=str(work / "bench.db"), collection="products", dim=args.dim, timeout_s=60,
                                     index_type=args.index_type, filtered_limit=args.filtered_limit,
                                     overfetch_below=args.overfetch_below))
    store.connect()
    store.record_fused_weights(fusion.dense_part(WEIGHTS))
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    with ThreadPoolExecutor(args.insert_threads) as pool:  # rows are built while earlier batches are stored
        list(pool.map(lambda s: store.upsert(rows_of(cat, s, min(args.n, s + args.batch), args.dim)), range(0, args.n, args.batch)))
    insert_s = time.perf_counter() - started
    report: dict = {"n": args.n, "dim": args.dim, "centres": args.centres, "index_type": args.index_type,
                    "insert": {"rows_per_s": round(args.n / insert_s, 1), "seconds": round(insert_s, 2), "batch": args.batch,
                               "threads": args.insert_threads, "vector_fields": "4 dense + 1 BM25 sparse (Milvus function)"}}
    print(f"[store] inserted {args.n} rows in {insert_s:.1f}s: {args.n / insert_s:.0f} rows/s", flush=True)
    # Search the collection as a (re)started gateway finds it: released and loaded again (a run searched
    # straight after the inserts measured within 15% of the reloaded p50s). The load is timed: it is most
    # of a gateway's time to SERVING on a Milvus Lite file.
    store.client.release_collection(store.config.collection, timeout=60)
    started = time.perf_counter()
    store.connect()
    report["load_collection_s"] = round(time.perf_counter() - started, 2)
    print(f"[store] reopened (load_collection) in {report['load_collection_s']} s", flush=True)
    cos_to_centre = float(np.mean(np.sum(cat["image"][:5000] * cat["centres"][cat["label"][:5000]], axis=1)))
    report["data"] = {"mean_cos_image_to_centre": round(cos_to_centre, 3)}
    qs = queries(cat, args.queries)
    searches = {c: StoreSearch(store, c) for c in args.candidates}
    search = searches[args.candidates[0]]
    for q in qs[:10]:  # warm-up
        search.run(q, "", WEIGHTS, "fused", ProductFilter())

    results = []
    dense = {c: cat[c] for c in ("image", "title", "caption")}
    for name, (flt, mask_of) in FILTERS.items():
        mask = mask_of(cat)
        # fused mode does not use the candidate count; multi_vector is measured at each (unfiltered)
        for mode, candidates in [("fused", None)] + ([("multi_vector", c) for c in args.candidates] if name == "none" else []):
            run = (searches[candidates] if candidates else search).run
            latencies, hits = timed(lambda q: run(q, "", WEIGHTS, mode, flt), [(q,) for q in qs])
            recalls = []
            for q, got in zip(qs, hits):
                truth = exact_top(sum(WEIGHTS[c] * (dense[c] @ q) for c in dense), mask)
                recalls.append(len({int(r["id"][1:]) for r, _, _ in got} & set(truth)) / max(1, len(truth)))
            row = {"mode": mode, "filter": name, "candidates": candidates, **percentiles(latencies),
                   "recall@10": round(float(np.mean(recalls)), 3)}
            results.append(row)
            print(f"[store] {row}", flush=True)
    for candidates, each in searches.items():
        latencies, _ = timed(lambda q: each.run(q, "", WEIGHTS, "multi_vector", ProductFilter(), "rrf"), [(q,) for q in qs])
        results.append({"mode": "multi_vector (rrf)", "filter": "none", "candidates": candidates, **percentiles(latencies)})
        print(f"[store] {results[-1]}", flush=True)

    # keyword channel: SKU / brand+noun queries; keyword-only, vector-only, hybrid
    rng = np.random.default_rng(7)
    picks = rng.integers(0, args.n, args.queries)
    # the text vector of a code like "sku4411" is unrelated to any product: a random direction
    unrelated = unit_rows(rng.normal(size=(len(picks), args.dim)))
    sku = [(unrelated[k], f"sku{i}") for k, i in enumerate(picks)]
    words = [(qs[k % len(qs)], f"{cat['brand'][i]} {NOUNS[cat['label'][i] % 10]}") for k, i in enumerate(picks)]
    keyword_only = {"image": 0.0, "title": 0.0, "caption": 0.0, "keyword": 1.0}
    plans = [("vector only (fused)", WEIGHTS, "fused", None)] + [("keyword only", keyword_only, "multi_vector", c) for c in args.candidates]

    def record(name, label, candidates, latencies, hits):
        row = {"mode": name, "query": label, "candidates": candidates, **percentiles(latencies)}
        if label == "sku":
            row["sku_first"] = round(float(np.mean([bool(h) and h[0][0]["id"] == f"p{i}" for h, i in zip(hits, picks)])), 3)
        results.append(row)
        print(f"[store] {row}", flush=True)

    for label, runs in (("sku", sku), ("brand+noun", words)):
        for name, weights, mode, candidates in plans:
            run = (searches[candidates] if candidates else search).run
            record(name, label, candidates, *timed(lambda q, text: run(q, text, weights, mode, ProductFilter()), runs))
        for candidates in args.candidates:  # the hybrid: bounded (this round), then rescoring both lists (round 3)
            record("hybrid (fused + BM25)", label, candidates, *hybrid_ab(searches[candidates], runs, bounded=True))
            record("hybrid, both lists rescored (round 3's path)", label, candidates, *hybrid_ab(searches[candidates], runs, bounded=False))
    report["search"] = results
    report["store_calls"] = store_calls(store, qs, max(args.candidates))
    store.close()
    shutil.rmtree(work, ignore_errors=True)
    return report


def hybrid_ab(search: StoreSearch, runs, bounded: bool):
    """The fused hybrid with its score bounds (gateway/search.py `_fused_hybrid`) or, with the bound's row limit at
    0, the per-list rescoring it falls back to (round 3's path: restricted fills, then the top_k rows)."""
    import gateway.search

    keep = gateway.search.BOUNDED_ROWS_MAX
    gateway.search.BOUNDED_ROWS_MAX = keep if bounded else 0
    try:
        return timed(lambda q, text: search.run(q, text, HYBRID, "fused", ProductFilter()), runs)
    finally:
        gateway.search.BOUNDED_ROWS_MAX = keep


def store_calls(store: MilvusStore, qs: np.ndarray, depth: int, runs: int = 50) -> list[dict]:
    """p50 of each store call a search is made of (what a hybrid search adds up), and whether two calls
    in flight overlap (Milvus Lite answers them almost one after the other)."""
    from concurrent.futures import ThreadPoolExecutor

    from gateway.rows import CHANNEL_MASK_FIELD, FUSED_FIELD

    none = ProductFilter()
    ids = [f"p{i}" for i in np.random.default_rng(3).integers(0, store.client.get_collection_stats(store.config.collection)["row_count"], depth)]
    pool = ThreadPoolExecutor(2)

    def ann(i):
        return store.ann(qs[i % len(qs)], FUSED_FIELD, depth, none, ["id", CHANNEL_MASK_FIELD])

    def bm25(i):
        return store.keyword(f"brand{i % 100} boot", depth, none)

    def both(i):
        a, b = pool.submit(ann, i), pool.submit(bm25, i)
        a.result(), b.result()

    calls = {
        f"ANN on the fused field, {depth} ids + masks": ann,
        f"BM25, {depth} ids": bm25,
        "both of the above, one after the other": lambda i: (ann(i), bm25(i)),
        "both of the above, concurrently (2 threads)": both,
        "fused inner products restricted to 10 ids": lambda i: store.within(qs[i % len(qs)], FUSED_FIELD, ids[i % 50: i % 50 + 10]),
        f"fused inner products restricted to {depth} ids": lambda i: store.within(qs[i % len(qs)], FUSED_FIELD, ids),
        "BM25 restricted to 10 ids": lambda i: store.keyword(f"brand{i % 100} boot", 10, none, ids[i % 50: i % 50 + 10]),
        f"BM25 restricted to {depth} ids": lambda i: store.keyword(f"brand{i % 100} boot", depth, none, ids),
        "10 rows by id, with vectors": lambda i: store.get(ids[i % 50: i % 50 + 10], True),
        "10 rows by a search restricted to their ids, with vectors (how the gateway reads rows)":
            lambda i: store.rows_within(qs[i % len(qs)], FUSED_FIELD, ids[i % 50: i % 50 + 10], store.fields(vectors=True)),
        "10 rows by id, scalars only": lambda i: store.get(ids[i % 50: i % 50 + 10], False),
    }
    out = []
    for name, call in calls.items():
        latencies, _ = timed(call, [(i,) for i in range(runs)])
        out.append({"call": name, "p50": round(float(np.median(latencies)), 2)})
        print(f"[store] {out[-1]}", flush=True)
    pool.shutdown()
    return out


def bench_gateway(args) -> dict:
    """Gateway overhead from server-timing, on a small catalog (tiny models: inference is cheap)."""
    from client.workload import synthetic_images
    from gateway import launcher
    from gateway.metrics import parse_server_timing
    from retrieval.v1 import retrieval_pb2 as pb
    from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

    work = Path(tempfile.mkdtemp(prefix="gateway_bench_"))
    gateway = launcher.start(args.model_repository, str(work / "g.db"), work, metrics_port=None, log_path=work / "gateway.log")
    try:
        stub = pb_grpc.RetrievalStub(gateway.open_channel())
        images = synthetic_images(args.gateway_catalog, seed=0)
        products = [pb.Product(id=f"g{i}", image=images[i], title=f"product {i}", category=f"cat{i % 20}", price=float(i % 500))
                    for i in range(args.gateway_catalog)]
        t = time.perf_counter()
        response = stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products), timeout=600)
        upsert_s = time.perf_counter() - t
        assert response.ok == len(products), response.results[:3]
        out = {"catalog": len(products), "upsert_items_per_s_end_to_end": round(len(products) / upsert_s, 1), "search": []}
        cases = {
            "text": pb.SearchRequest(text="a red product", top_k=10),
            "text+filter": pb.SearchRequest(text="a red product", top_k=10, filters=pb.Filters(max_price=150)),
            "image": pb.SearchRequest(image=images[7 % len(images)], top_k=10),
        }
        for name, request in cases.items():
            for _ in range(20):
                stub.Search(request)
            inside, client, totals = [], [], []
            for _ in range(args.gateway_queries):
                t = time.perf_counter()
                _, call = stub.Search.with_call(request)
                wall = (time.perf_counter() - t) * 1000
                timing = parse_server_timing(dict(call.trailing_metadata())["server-timing"])
                deps = timing["inference"] + timing["store"]
                inside.append(timing["total"] - deps)
                client.append(wall - deps)
                totals.append(timing["total"])
            row = {"query": name, "gateway_overhead_ms": percentiles(inside), "client_observed_overhead_ms": percentiles(client),
                   "gateway_total_ms": percentiles(totals)}
            out["search"].append(row)
            print(f"[gateway] {row}", flush=True)
        return out
    finally:
        gateway.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--centres", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--insert-threads", type=int, default=1, help="concurrent upsert calls")
    parser.add_argument("--index-type", default="IVF_FLAT", choices=["IVF_FLAT", "FLAT", "AUTOINDEX"])
    parser.add_argument("--filtered-limit", type=int, default=4000)
    parser.add_argument("--overfetch-below", type=float, default=0.2)
    parser.add_argument("--candidates", type=int, nargs="+", default=[Settings().multi_vector_candidates],
                        help="multi_vector_candidates (per channel, and from BM25); several: each is measured (default: the gateway's)")
    parser.add_argument("--model-repository", type=Path, help="also measure gateway overhead on this repository")
    parser.add_argument("--gateway-catalog", type=int, default=500)
    parser.add_argument("--gateway-queries", type=int, default=300)
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    report = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    if not args.skip_store:
        report["store"] = bench_store(args)
    if args.model_repository:
        report["gateway"] = bench_gateway(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
