"""The system under test: `python -m gateway` (local ONNX Runtime backend, Milvus Lite file), the catalog indexed
through UpsertProducts and every query sent through Search, as a client would."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from retrieval.v1 import retrieval_pb2 as pb

def start_gateway(repository: Path, workdir: Path, gateway_args: Sequence[str], log: Callable[[str], None]):
    """`python -m gateway` (gateway/launcher.py) with the local backend on the exported repository and a fresh
    Milvus Lite file; returns the launcher's GatewayProcess (address, stop())."""
    from gateway import launcher

    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("products.db*"):
        stale.unlink()
    # fp32 ONNX Runtime: the comparison with the fp32 PyTorch reference checks the gateway's scoring, not the
    # bf16 engine's rounding (its effect on rankings is the kernels benchmark's recall); later flags override
    args = ["--engine", "onnxruntime", *gateway_args]
    gateway = launcher.start(repository, str(workdir / "products.db"), workdir, args, log_path=workdir / "gateway.log",
                             wait=True, timeout=300)
    log(f"[system] gateway pid {gateway.proc.pid} on {gateway.address}, store {gateway.store_uri}")
    return gateway


@dataclass
class Listing:
    id: str
    image: bytes
    title: str
    description: str
    brand: str


def index(client, listings: Sequence[Listing], log: Callable[[str], None], batch_size: int = 64) -> tuple[float, dict[str, list[str]]]:
    """UpsertProducts in batches; returns (seconds, tags the gateway stored per id). Any non-OK item is an error."""
    started = time.perf_counter()
    tags: dict[str, list[str]] = {}
    products = (pb.Product(id=x.id, image=x.image, title=x.title, description=x.description, brand=x.brand) for x in listings)
    for _batch, response in client.upsert(products, batch_size=batch_size, timeout=600):
        bad = [r for r in response.results if r.status != pb.ITEM_STATUS_OK]
        if bad:
            raise RuntimeError(f"{len(bad)} products not stored, e.g. {bad[0].id}: {bad[0].reason}")
        for result in response.results:
            tags[result.id] = list(result.tags)
    seconds = time.perf_counter() - started
    log(f"[system] indexed {len(listings)} products in {seconds:.1f} s")
    return seconds, tags


@dataclass(frozen=True)
class Mode:
    """One way of asking the gateway: mode, combine, and request weights (None = the gateway's defaults,
    a mapping per query type = weights chosen on validation)."""

    name: str
    mode: str = "fused"
    combine: str = "weighted"
    weights: Mapping[str, Mapping[str, float]] | Mapping[str, float] | None = None
    tasks: tuple[str, ...] = ("text->image", "image->image", "composed", "brand/SKU")

    def weights_for(self, query_type: str) -> Mapping[str, float] | None:
        if self.weights is None:
            return None
        if query_type in self.weights and isinstance(self.weights[query_type], Mapping):
            return self.weights[query_type]  # type: ignore[return-value]
        return self.weights  # type: ignore[return-value]


def search_all(client, mode: Mode, queries, images: Mapping[str, bytes], k: int, text_weight: float) -> tuple[list[list[str]], list[dict], float]:
    """Rankings (query product dropped), the weights the gateway said it used, and mean ms per query."""
    rankings, used, seconds = [], [], 0.0
    for q in queries:
        weights = mode.weights_for(q.query_type)
        started = time.perf_counter()
        response = client.search(q.text, images[q.image_id] if q.image_id else None, top_k=k + (1 if q.exclude else 0),
                                 weights=dict(weights) if weights else None, mode=mode.mode, combine=mode.combine,
                                 text_weight=text_weight, timeout=60)
        seconds += time.perf_counter() - started
        rankings.append([h.product.id for h in response.hits if h.product.id != q.exclude][:k])
        used.append({c: round(getattr(response.weights, c), 4) for c in ("image", "title", "caption", "keyword")})
    return rankings, used, 1000 * seconds / max(1, len(queries))
