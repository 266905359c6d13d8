"""Evaluation harness: search quality through the real system (gateway + backend + Milvus) and by exact
brute force on the same vectors, with an ablation per channel.

Queries on a catalog with categories as ground truth (a same-category product is relevant):
text->image (category queries such as "ankle boot", "a photo of a dress"), image->image (catalog
photos as queries, the query product itself excluded) and composed (photo + text modifier).
Ablations: each channel alone (multi_vector with weights 1/0/0 ...), the stored fused vector
(default weights), multi_vector weighted with default weights, and multi_vector RRF. The exact
figures use vectors read back from the store (GetProducts include_vectors) and query vectors from
Embed, so the gap between the two columns is the ANN/store's share, nothing else.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gateway.process import stop_process
from quality.datasets import FMNIST_SYNONYMS, category_queries
from quality.metrics import summarize

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("image", "title", "caption")
DEFAULT_WEIGHTS = {"image": 0.5, "title": 0.3, "caption": 0.2}


@dataclass(frozen=True)
class Ablation:
    name: str
    mode: str  # fused | multi_vector
    weights: dict[str, float] | None = None  # None = the gateway's defaults
    combine: str = "weighted"


ABLATIONS = [
    Ablation("image only", "multi_vector", {"image": 1.0, "title": 0.0, "caption": 0.0}),
    Ablation("title only", "multi_vector", {"image": 0.0, "title": 1.0, "caption": 0.0}),
    Ablation("caption/tags only", "multi_vector", {"image": 0.0, "title": 0.0, "caption": 1.0}),
    Ablation("fused (default weights)", "fused"),
    Ablation("multi_vector weighted", "multi_vector"),
    Ablation("multi_vector rrf", "multi_vector", combine="rrf"),
]


@dataclass
class EvalConfig:
    repository: Path
    out: Path = Path("runs/eval")
    address: str | None = None
    catalog: Path | None = None
    limit: int = 10000
    image_queries: int = 200
    top_k: int = 10
    store_uri: str | None = None
    workdir: Path = Path("runs/eval-work")
    skip_index: bool = False
    seed: int = 0
    text_weight: float = 0.5
    gateway_args: list[str] = field(default_factory=list)
    ablations: list[Ablation] = field(default_factory=lambda: list(ABLATIONS))


@dataclass
class Query:
    task: str  # text->image | image->image | composed
    text: str
    image_id: str | None  # a catalog product whose photo is the query image
    relevant: set[str]
    exclude: str | None = None  # the query product itself (not a result)


# -- catalog and queries ------------------------------------------------------------------------
def read_rows(catalog: Path) -> list[dict]:
    return [json.loads(line) for line in catalog.read_text(encoding="utf-8").splitlines() if line.strip()]


def noun(category: str) -> str:
    return FMNIST_SYNONYMS.get(category, [category.lower()])[0]


def build_queries(rows: Sequence[dict], n_image: int, seed: int) -> list[Query]:
    """Category text queries, image queries and composed queries, with same-category relevance."""
    by_category: dict[str, set[str]] = {}
    for row in rows:
        by_category.setdefault(row["category"], set()).add(row["id"])
    names = sorted(by_category, key=lambda c: list(FMNIST_SYNONYMS).index(c) if c in FMNIST_SYNONYMS else 99)
    queries = [Query("text->image", text, None, by_category[names[label]]) for text, label in category_queries(names)]
    picks = random.Random(seed).sample(list(rows), min(n_image, len(rows)))
    for row in picks:
        relevant = by_category[row["category"]] - {row["id"]}
        queries.append(Query("image->image", "", row["id"], relevant, exclude=row["id"]))
    for row in picks:
        relevant = by_category[row["category"]] - {row["id"]}
        queries.append(Query("composed", f"a photo of a {noun(row['category'])}", row["id"], relevant, exclude=row["id"]))
    return queries


# -- the system ---------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(cfg: EvalConfig, log: Callable[[str], None]) -> tuple[subprocess.Popen, str]:
    """`python -m gateway` with the local backend on the exported repository and a Milvus Lite file."""
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    store = cfg.store_uri or str(cfg.workdir / "products.db")
    command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
               "--backend", "local", "--model-repository", str(cfg.repository), "--store-uri", store, *cfg.gateway_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log_file = (cfg.workdir / "gateway.log").open("a")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    log(f"[eval] gateway pid {proc.pid} on 127.0.0.1:{port}, store {store}")
    return proc, f"127.0.0.1:{port}"


def index_catalog(catalog: Path, address: str, log: Callable[[str], None]) -> float:
    """`python -m client index` as a user runs it; returns seconds."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "client", "index", str(catalog), "--address", address, "--restart"]
    log(f"[eval] {' '.join(command[1:])}")
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - started


def fetch_vectors(client, ids: Sequence[str], batch: int = 500) -> dict[str, np.ndarray]:
    """Per channel (and fused) [N, D] matrices of the stored vectors, in `ids` order."""
    out: dict[str, list] = {c: [] for c in (*CHANNELS, "fused")}
    for start in range(0, len(ids), batch):
        response = client.get(list(ids[start:start + batch]), include_vectors=True)
        if response.not_found:
            raise RuntimeError(f"{len(response.not_found)} products are not in the store, e.g. {response.not_found[0]}")
        for stored in response.products:
            for channel in out:
                out[channel].append(np.asarray(getattr(stored.vectors, channel), dtype=np.float32))
    return {c: np.stack(v) for c, v in out.items()}


def embed_queries(client, queries: Sequence[Query], images: dict[str, bytes], text_weight: float) -> np.ndarray:
    """The query vectors the gateway builds (Embed + gateway.fusion.compose_query)."""
    from gateway.fusion import compose_query

    texts = sorted({q.text for q in queries if q.text})
    image_ids = sorted({q.image_id for q in queries if q.image_id})
    text_vec, image_vec = {}, {}
    for start in range(0, len(texts), 32):
        chunk = texts[start:start + 32]
        for t, v in zip(chunk, client.embed(texts=chunk).text_vectors):
            text_vec[t] = np.asarray(v.values, np.float32)
    for start in range(0, len(image_ids), 32):
        chunk = image_ids[start:start + 32]
        for i, v in zip(chunk, client.embed(images=[images[i] for i in chunk]).image_vectors):
            image_vec[i] = np.asarray(v.values, np.float32)
    return np.stack([compose_query(image_vec.get(q.image_id), text_vec.get(q.text), text_weight) for q in queries])


# -- exact brute force --------------------------------------------------------------------------
def exact_rankings(ablation: Ablation, q: np.ndarray, vectors: dict[str, np.ndarray], ids: Sequence[str],
                   queries: Sequence[Query], k: int, rrf_k: int = 60) -> list[list[str]]:
    """The ranking the ablation defines, computed exactly over every product."""
    weights = ablation.weights or DEFAULT_WEIGHTS
    position = {pid: i for i, pid in enumerate(ids)}
    if ablation.mode == "fused":
        scores = q @ vectors["fused"].T
    elif ablation.combine == "rrf" and len([w for w in weights.values() if w > 0]) > 1:
        scores = np.zeros((len(q), len(ids)), dtype=np.float64)
        for channel in CHANNELS:
            if weights[channel] <= 0:
                continue
            channel_scores = q @ vectors[channel].T
            for row, query in enumerate(queries):
                if query.exclude is not None:
                    channel_scores[row, position[query.exclude]] = -np.inf
            ranks = np.empty_like(channel_scores, dtype=np.int64)
            order = np.argsort(-channel_scores, axis=1, kind="stable")
            np.put_along_axis(ranks, order, np.arange(1, len(ids) + 1)[None, :].repeat(len(q), 0), axis=1)
            scores += weights[channel] / (rrf_k + ranks)
    else:
        total = sum(weights.values())
        scores = sum(weights[c] * (q @ vectors[c].T) for c in CHANNELS if weights[c] > 0) / total
    scores = np.asarray(scores, dtype=np.float64)
    for row, query in enumerate(queries):
        if query.exclude is not None:
            scores[row, position[query.exclude]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row if np.isfinite(scores[r, j])] for r, row in enumerate(top)]


# -- through the gateway ------------------------------------------------------------------------
def gateway_rankings(client, ablation: Ablation, queries: Sequence[Query], images: dict[str, bytes], k: int,
                     text_weight: float) -> tuple[list[list[str]], float]:
    """Search for every query; returns rankings (the query product dropped) and mean latency in ms."""
    rankings, seconds = [], 0.0
    for query in queries:
        started = time.perf_counter()
        response = client.search(
            query.text, images[query.image_id] if query.image_id else None, top_k=k + (1 if query.exclude else 0),
            weights=ablation.weights, mode=ablation.mode, combine=ablation.combine, text_weight=text_weight,
        )
        seconds += time.perf_counter() - started
        ranked = [hit.product.id for hit in response.hits if hit.product.id != query.exclude]
        rankings.append(ranked[:k])
    return rankings, 1000 * seconds / max(1, len(queries))


# -- report -------------------------------------------------------------------------------------
HEADLINE = ("precision@10", "hit@1", "hit@5", "hit@10", "mrr", "ndcg@10")


def table(results: list[dict]) -> str:
    """Markdown: one row per task x ablation, gateway and exact side by side."""
    head = "| task | channels | P@10 gateway | P@10 exact | abs diff | hit@1 | hit@5 | hit@10 | MRR | nDCG@10 | recall@10 | ms/query |"
    lines = [head, "|" + "---|" * 12]
    for r in results:
        g, e = r["gateway"], r["exact"]
        lines.append(
            f"| {r['task']} | {r['ablation']} | {g['precision@10']:.3f} | {e['precision@10']:.3f} | "
            f"{abs(g['precision@10'] - e['precision@10']):.3f} | {g['hit@1']:.3f} | {g['hit@5']:.3f} | {g['hit@10']:.3f} | "
            f"{g['mrr']:.3f} | {g['ndcg@10']:.3f} | {g['recall@10']:.4f} | {r['ms_per_query']:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    ablations = list(dict.fromkeys(r["ablation"] for r in results))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.5), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = {r["ablation"]: r for r in results if r["task"] == task}
        x = np.arange(len(ablations))
        ax.bar(x - 0.2, [rows[a]["gateway"]["precision@10"] for a in ablations], 0.4, label="gateway + Milvus")
        ax.bar(x + 0.2, [rows[a]["exact"]["precision@10"] for a in ablations], 0.4, label="exact brute force", hatch="//", alpha=0.7)
        ax.set_xticks(x, ablations, rotation=35, ha="right", fontsize=8)
        ax.set_title(task)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("precision@10 (same category)")
    axes[0][0].legend(fontsize=8, loc="lower left", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ensure_catalog(cfg: EvalConfig, log: Callable[[str], None]) -> Path:
    if cfg.catalog is not None:
        return cfg.catalog
    from quality.sample_catalog import write_catalog

    folder = cfg.workdir / f"fashion-mnist-test-{cfg.limit}"
    catalog = folder / "catalog.jsonl"
    if not catalog.is_file():
        catalog, source = write_catalog(folder, n=cfg.limit, size=112, seed=cfg.seed, allow_fallback=False)
        log(f"[eval] wrote {catalog} ({cfg.limit} products from {source})")
    return catalog


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Index (unless skipped), query every ablation through the gateway and exactly; write JSON, table, plot."""
    from client.sync import SearchClient

    cfg.out.mkdir(parents=True, exist_ok=True)
    catalog = ensure_catalog(cfg, log)
    rows = read_rows(catalog)
    ids = [r["id"] for r in rows]
    proc = None
    address = cfg.address
    if address is None:
        proc, address = start_gateway(cfg, log)
    try:
        with SearchClient(address, timeout=120) as client:
            client.wait_until_serving(timeout=180)
            index_seconds = None if cfg.skip_index else index_catalog(catalog, address, log)
            queries = build_queries(rows, cfg.image_queries, cfg.seed)
            images = {q.image_id: (catalog.parent / next(r["image"] for r in rows if r["id"] == q.image_id)).read_bytes()
                      for q in queries if q.image_id}
            vectors = fetch_vectors(client, ids)
            q = embed_queries(client, queries, images, cfg.text_weight)
            results = []
            for ablation in cfg.ablations:
                exact = exact_rankings(ablation, q, vectors, ids, queries, cfg.top_k)
                served, ms = gateway_rankings(client, ablation, queries, images, cfg.top_k, cfg.text_weight)
                for task in dict.fromkeys(x.task for x in queries):
                    pick = [i for i, x in enumerate(queries) if x.task == task]
                    relevant = [queries[i].relevant for i in pick]
                    results.append({
                        "task": task, "ablation": ablation.name, "mode": ablation.mode, "combine": ablation.combine,
                        "weights": ablation.weights or "default", "ms_per_query": ms,
                        "gateway": summarize([served[i] for i in pick], relevant),
                        "exact": summarize([exact[i] for i in pick], relevant),
                    })
                log(f"[eval] {ablation.name}: done ({ms:.1f} ms/query)")
    finally:
        if proc is not None:
            stop_process(proc)
    results.sort(key=lambda r: ["text->image", "image->image", "composed"].index(r["task"]))
    text = table(results)
    report = {"catalog": str(catalog), "products": len(rows), "repository": str(cfg.repository),
              "index_seconds": index_seconds, "queries": {t: sum(1 for x in queries if x.task == t) for t in ("text->image", "image->image", "composed")},
              "text_weight": cfg.text_weight, "results": results, "table": text}
    (cfg.out / "eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (cfg.out / "eval.md").write_text(text + "\n")
    plot(results, cfg.out / "eval.png")
    return report
