"""The product store: one interface, and Milvus (Lite file, standalone or cluster by URI) behind it.

Schema, indexes and metric are defined once here (`_schema`, `_index_params`). Vectors are
L2-normalized, so COSINE ranks like IP. Milvus Lite 2.5.1 serves each vector field from one
growing segment through an interim IVF index that ignores nlist/nprobe (docs/gateway.md): its
unfiltered recall@10 is high on clustered data, but a selective filter whose matches lie away
from the query (a category, a 1% brand) drops recall@10 to 0.25-0.5, because the index scans
only the lists nearest the query. Asking for more results makes it scan more lists, so a
selective filter (its match count, from count(*), cached) over-fetches `filtered_limit`
candidates; unselective filters and unfiltered searches ask for top_k. A filter on a few ids
is scored exactly. A Milvus server gets the same schema and indexes.

All calls are synchronous pymilvus calls with a timeout (pymilvus otherwise retries an
unreachable server for minutes); the gateway runs them in threads.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from gateway.errors import InvalidInput, Unavailable
from gateway.filters import ProductFilter, string_list

log = logging.getLogger("gateway.store")

CHANNEL_FIELDS = {"image": "image_vec", "title": "title_vec", "caption": "caption_vec"}
FUSED_FIELD = "fused_vec"
VECTOR_FIELDS = [*CHANNEL_FIELDS.values(), FUSED_FIELD]
EXACT_ID_LIMIT = 256  # a search filtered to at most this many ids is scored exactly
SCALAR_FIELDS = ["id", "title", "description", "category", "brand", "price", "in_stock", "caption", "image_uri", "meta"]
METRIC = "COSINE"

# VARCHAR lengths (Milvus servers enforce them, Milvus Lite does not: the gateway checks them).
MAX_LENGTHS = {
    "id": 128,
    "title": 1024,
    "description": 8192,
    "category": 256,
    "brand": 256,
    "caption": 1024,
    "image_uri": 2048,
}


@dataclass
class StoreHit:
    id: str
    score: float
    row: dict[str, Any]


@dataclass
class SearchPlan:
    """What the store did for one search (returned for metrics and docs)."""

    field: str
    expression: str
    limit: int
    matching_fraction: float | None = None


class ProductStore(Protocol):
    """What the gateway needs from a store."""

    dim: int

    def connect(self) -> None: ...
    def ping(self) -> bool: ...
    def upsert(self, rows: Sequence[dict[str, Any]]) -> None: ...
    def get(self, ids: Sequence[str], include_vectors: bool = False) -> list[dict[str, Any]]: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def count(self) -> int: ...
    def search(self, vector: np.ndarray, top_k: int, flt: ProductFilter) -> tuple[list[StoreHit], SearchPlan]: ...
    def multi_search(
        self, vector: np.ndarray, weights: dict[str, float], combine: str, rrf_k: int, top_k: int, flt: ProductFilter
    ) -> list[StoreHit]: ...
    def close(self) -> None: ...


@dataclass
class MilvusConfig:
    uri: str
    collection: str
    dim: int
    token: str = ""
    timeout_s: float = 10.0
    index_type: str = "IVF_FLAT"
    nlist: int = 1024
    nprobe: int = 32
    filtered_limit: int = 4000
    overfetch_below: float = 0.2
    count_cache_s: float = 30.0
    multi_vector_candidates: int = 100
    index_extra: dict[str, Any] = field(default_factory=dict)


def _is_connection_error(exc: BaseException) -> bool:
    import grpc
    from pymilvus.exceptions import MilvusException, MilvusUnavailableException

    if isinstance(exc, (MilvusUnavailableException, grpc.RpcError, ConnectionError, TimeoutError)):
        return True
    text = str(exc).lower()
    if isinstance(exc, MilvusException):
        return any(s in text for s in ("unavailable", "deadline", "connect", "timeout", "retry run out", "closed channel", "fail connecting"))
    return False


class MilvusStore:
    """ProductStore on pymilvus MilvusClient."""

    def __init__(self, config: MilvusConfig) -> None:
        self.config = config
        self.dim = config.dim
        self._client = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts: dict[str, tuple[float, float]] = {}
        # pymilvus bounds its retry loop by `timeout` only when it is an int (else it retries 75 times, minutes)
        self._timeout = max(1, int(math.ceil(config.timeout_s)))

    # -- connection ----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self.connect()
        return self._client

    def connect(self) -> None:
        """Open the client, create the collection if missing, load it. Raises Unavailable."""
        from pymilvus import MilvusClient

        with self._lock:
            try:
                uri = self.config.uri
                if "://" not in uri:
                    Path(uri).parent.mkdir(parents=True, exist_ok=True)
                client = MilvusClient(uri=uri, token=self.config.token, timeout=self._timeout)
                self._ensure_collection(client)
            except Unavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to open is "store unavailable"
                self._drop_client()
                raise Unavailable(f"store {self.config.uri!r} is unavailable: {exc}") from exc
            self._client = client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass

    def _ensure_collection(self, client) -> None:
        name, timeout = self.config.collection, self._timeout
        if not client.has_collection(name, timeout=timeout):
            client.create_collection(name, schema=self._schema(), index_params=self._index_params(client), timeout=timeout)
            log.info("created collection %s (dim %d)", name, self.dim)
        else:
            self._check_dim(client)
        client.load_collection(name, timeout=timeout)

    def _check_dim(self, client) -> None:
        info = client.describe_collection(self.config.collection, timeout=self._timeout)
        for f in info.get("fields", []):
            if f.get("name") == FUSED_FIELD:
                dim = int(f.get("params", {}).get("dim", self.dim))
                if dim != self.dim:
                    raise Unavailable(
                        f"collection {self.config.collection!r} holds {dim}-d vectors but the models give {self.dim}-d: "
                        "use another --collection or store"
                    )

    def _schema(self):
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="products (gateway/store.py)")
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_LENGTHS["id"])
        for name in ("title", "description", "category", "brand", "caption", "image_uri"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_LENGTHS[name])
        schema.add_field("price", DataType.DOUBLE)  # -1 = unknown
        schema.add_field("in_stock", DataType.BOOL)
        # tags and attributes in one JSON field: Milvus Lite 2.5.1 + pymilvus 2.5.18 fail on empty
        # query results when the collection has an ARRAY field, and JSON needs a nested path to filter.
        schema.add_field("meta", DataType.JSON)
        for name in VECTOR_FIELDS:
            schema.add_field(name, DataType.FLOAT_VECTOR, dim=self.dim)
        return schema

    def _index_params(self, client):
        params = client.prepare_index_params()
        ann = {"index_type": self.config.index_type, "metric_type": METRIC}
        if self.config.index_type == "IVF_FLAT":
            ann["params"] = {"nlist": self.config.nlist}
        for name in VECTOR_FIELDS:
            params.add_index(field_name=name, **ann)
        return params

    def ping(self) -> bool:
        try:
            self.client.has_collection(self.config.collection, timeout=min(2, self._timeout))
            return True
        except Exception:  # noqa: BLE001
            self._drop_client()
            return False

    def close(self) -> None:
        with self._lock:
            self._drop_client()

    def _call(self, what: str, fn, *args, **kwargs):
        """One store call with the timeout; connection failures become Unavailable (and reconnect later)."""
        kwargs.setdefault("timeout", self._timeout)
        try:
            return fn(self.client, *args, **kwargs)
        except Unavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            if _is_connection_error(exc):
                self._drop_client()
                raise Unavailable(f"store unavailable during {what}: {exc}") from exc
            raise

    # -- writes --------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace rows by id; returns after the store acknowledged them (durable)."""
        if not rows:
            return
        for row in rows:
            for name in VECTOR_FIELDS:
                vec = np.asarray(row[name], dtype=np.float32)
                if vec.shape != (self.dim,) or not np.all(np.isfinite(vec)):
                    raise InvalidInput(f"product {row['id']!r}: {name} is not a finite {self.dim}-d vector")
        self._call("upsert", lambda c, **kw: c.upsert(self.config.collection, list(rows), **kw))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by id (ids that do not exist are ignored)."""
        if ids:
            self._call("delete", lambda c, **kw: c.delete(self.config.collection, ids=list(ids), **kw))

    # -- reads ---------------------------------------------------------------------------------
    def get(self, ids: Sequence[str], include_vectors: bool = False) -> list[dict[str, Any]]:
        if not ids:
            return []
        fields = SCALAR_FIELDS + (VECTOR_FIELDS if include_vectors else [])
        rows = self._call(
            "get", lambda c, **kw: c.query(self.config.collection, filter=f"id in {string_list(list(ids))}", output_fields=fields, **kw)
        )
        return [dict(r) for r in rows]

    def count(self) -> int:
        rows = self._call("count", lambda c, **kw: c.query(self.config.collection, filter="", output_fields=["count(*)"], **kw))
        return int(rows[0]["count(*)"])

    def _search_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"metric_type": METRIC}
        if self.config.index_type == "IVF_FLAT":
            params["params"] = {"nprobe": self.config.nprobe}
        return params

    def plan(self, flt: ProductFilter, top_k: int) -> SearchPlan:
        """How a fused search runs. Unfiltered, or a filter most products pass: top_k from the index.
        A selective filter (matching < `overfetch_below` of the catalog, counted with count(*) and
        cached for `count_cache_s`): ask for `filtered_limit` candidates so the interim index scans
        more lists, then keep the top_k (docs/gateway.md, "How a search runs")."""
        expression = flt.expression()
        if not expression:
            return SearchPlan(FUSED_FIELD, "", top_k)
        fraction = self.matching_fraction(expression)
        if fraction >= self.config.overfetch_below:
            return SearchPlan(FUSED_FIELD, expression, top_k, fraction)
        return SearchPlan(FUSED_FIELD, expression, min(max(top_k, self.config.filtered_limit), 16384), fraction)

    def matching_fraction(self, expression: str) -> float:
        """Share of the catalog an expression matches (cached: shops repeat their filters)."""
        now = time.monotonic()
        with self._count_lock:
            cached = self._counts.get(expression)
            if cached and now - cached[0] < self.config.count_cache_s:
                return cached[1]
        total = self._count_expression("")
        fraction = self._count_expression(expression) / total if total else 1.0
        with self._count_lock:
            if len(self._counts) > 4096:
                self._counts.clear()
            self._counts[expression] = (now, fraction)
        return fraction

    def _count_expression(self, expression: str) -> int:
        rows = self._call("count", lambda c, **kw: c.query(self.config.collection, filter=expression, output_fields=["count(*)"], **kw))
        return int(rows[0]["count(*)"])

    def search(self, vector: np.ndarray, top_k: int, flt: ProductFilter, output_vectors: bool = True) -> tuple[list[StoreHit], SearchPlan]:
        plan = self.plan(flt, top_k)
        vector = np.asarray(vector, dtype=np.float32)
        if flt.ids and len(flt.ids) <= EXACT_ID_LIMIT:
            return self._exact_by_ids(vector, top_k, plan), plan
        if plan.limit > top_k:
            result = self._call(
                "search",
                lambda c, **kw: c.search(
                    self.config.collection, data=[vector.tolist()], anns_field=plan.field, limit=plan.limit,
                    filter=plan.expression, search_params=self._search_params(), **kw,
                ),
            )
            ids = [h["id"] for h in result[0][:top_k]]
            scores = {h["id"]: float(h["distance"]) for h in result[0][:top_k]}
            rows = {r["id"]: r for r in self.get(ids, include_vectors=output_vectors)} if ids else {}
            return [StoreHit(i, scores[i], rows[i]) for i in ids if i in rows], plan
        fields = SCALAR_FIELDS + (VECTOR_FIELDS if output_vectors else [])
        result = self._call(
            "search",
            lambda c, **kw: c.search(
                self.config.collection, data=[vector.tolist()], anns_field=plan.field, limit=top_k,
                filter=plan.expression, search_params=self._search_params(), output_fields=fields, **kw,
            ),
        )
        return [StoreHit(h["id"], float(h["distance"]), dict(h["entity"])) for h in result[0]], plan

    def _channel_limit(self, flt: ProductFilter, top_k: int) -> int:
        """Candidates per channel in multi_vector mode: a product in the weighted top-k is often not in
        every channel's own top-k, so each channel returns more."""
        return min(max(self.plan(flt, top_k).limit, self.config.multi_vector_candidates, top_k), 16384)

    def _exact_by_ids(self, vector: np.ndarray, top_k: int, plan: SearchPlan) -> list[StoreHit]:
        """A filter naming a few ids: fetch those rows and score them exactly (an ANN index would
        only find the ones near the query)."""
        rows = self._call(
            "query",
            lambda c, **kw: c.query(self.config.collection, filter=plan.expression, output_fields=SCALAR_FIELDS + VECTOR_FIELDS, **kw),
        )
        scored = [StoreHit(r["id"], float(np.dot(vector, np.asarray(r[FUSED_FIELD], dtype=np.float32))), dict(r)) for r in rows]
        scored.sort(key=lambda h: (-h.score, h.id))
        return scored[:top_k]

    def multi_search(
        self, vector: np.ndarray, weights: dict[str, float], combine: str, rrf_k: int, top_k: int, flt: ProductFilter
    ) -> list[StoreHit]:
        """One ANN search per channel with weight > 0, combined by the store's ranker (hybrid_search).

        Milvus' RRFRanker has no weights, so weighted RRF runs in the gateway (search.py) on the
        per-channel lists from `channel_search`.
        """
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        expression = flt.expression()
        channels = [c for c in CHANNEL_FIELDS if weights.get(c, 0) > 0]
        data = [np.asarray(vector, dtype=np.float32).tolist()]
        requests = [
            AnnSearchRequest(data, CHANNEL_FIELDS[c], self._search_params(), self._channel_limit(flt, top_k), expr=expression or None)
            for c in channels
        ]
        ranker = WeightedRanker(*[weights[c] for c in channels]) if combine == "weighted" else RRFRanker(rrf_k)
        fields = SCALAR_FIELDS + VECTOR_FIELDS
        result = self._call(
            "hybrid_search",
            lambda c, **kw: c.hybrid_search(self.config.collection, requests, ranker, limit=top_k, output_fields=fields, **kw),
        )
        return [StoreHit(h["id"], float(h["distance"]), dict(h["entity"])) for h in result[0]]

    def channel_search(self, vector: np.ndarray, channel: str, top_k: int, flt: ProductFilter) -> list[StoreHit]:
        """One channel's ranked list (for gateway-side RRF)."""
        fields = SCALAR_FIELDS + VECTOR_FIELDS
        result = self._call(
            "search",
            lambda c, **kw: c.search(
                self.config.collection,
                data=[np.asarray(vector, dtype=np.float32).tolist()],
                anns_field=CHANNEL_FIELDS[channel],
                limit=self._channel_limit(flt, top_k),
                filter=flt.expression(),
                search_params=self._search_params(),
                output_fields=fields,
                **kw,
            ),
        )
        return [StoreHit(h["id"], float(h["distance"]), dict(h["entity"])) for h in result[0]]


def vectors_of(row: dict[str, Any]) -> dict[str, np.ndarray]:
    """Channel name -> vector of a row returned with vectors (image, title, caption, fused)."""
    out = {c: np.asarray(row[f], dtype=np.float32) for c, f in CHANNEL_FIELDS.items() if f in row}
    if FUSED_FIELD in row:
        out["fused"] = np.asarray(row[FUSED_FIELD], dtype=np.float32)
    return out


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
