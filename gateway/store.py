"""The product store: Milvus (Lite file, standalone or cluster by URI) behind a small interface.

Milvus only: the row layout belongs to gateway/rows.py, scoring to gateway/fusion.py. Schema,
indexes, metric and the keyword analyzer are defined once here. Dense channel vectors are
L2-normalized and the fused vector is their un-normalized weighted sum, so every dense field is
searched by inner product (IP): q . v is the cosine for a channel and the exact dense score for
the fused vector. The keyword channel is Milvus' own BM25: a VARCHAR with an analyzer feeds a BM25
`Function` into a sparse field (the same schema on Milvus Lite 2.5 and on Milvus >= 2.5 servers).

Milvus Lite 2.5.1 serves each vector field from one growing segment through an interim IVF index
that ignores nlist/nprobe (docs/gateway.md): its unfiltered recall@10 is high on clustered data,
but a selective filter whose matches lie away from the query drops recall, because the index
scans only the lists nearest the query. Asking for more results makes it scan more lists, so a
selective filter (its match count, from count(*), cached) over-fetches `filtered_limit`
candidates.

The weights the stored fused vectors were built with are recorded in a small side collection
(`<collection>_meta`; Milvus Lite has no collection properties), so a change of default weights
is seen at start (`python -m gateway.maintenance rebuild-fused` rebuilds them from the stored channels).

All calls are synchronous pymilvus calls with a timeout (pymilvus otherwise retries an
unreachable server for minutes); the gateway runs them in threads.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gateway.errors import InvalidInput, Unavailable
from gateway.filters import ProductFilter, string_list
from gateway.rows import (
    CHANNEL_MASK_FIELD, DENSE_FIELDS, FUSED_FIELD, KEYWORD_SPARSE_FIELD, KEYWORD_TEXT_FIELD, MAX_LENGTHS, SCALAR_FIELDS,
)

log = logging.getLogger("gateway.store")

SCHEMA_VERSION = 2  # 2: IP metric, un-normalized fused vector, channel mask, BM25 keyword field
SCHEMA_TAG = f"mmretrieval products schema {SCHEMA_VERSION}"
EXACT_ID_LIMIT = 256  # a search filtered to at most this many ids is scored exactly
METRIC = "IP"
MAX_LIMIT = 16384  # Milvus' topk limit
# Lowercase, Unicode folding (cafe == café), English stemming (boots == boot); the standard
# tokenizer splits "4411-B" into "4411" and "b", so codes and sizes stay searchable.
KEYWORD_ANALYZER = {"tokenizer": "standard", "filter": ["lowercase", "asciifolding", {"type": "stemmer", "language": "english"}]}
META_SUFFIX = "_meta"


@dataclass
class SearchPlan:
    """How the store runs one ANN search (for a selective filter it over-fetches)."""

    expression: str
    limit: int
    matching_fraction: float | None = None


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
    load_timeout_s: float = 600.0  # loading a large collection takes longer than one call's timeout
    index_extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any, dim: int, collection: str | None = None) -> "MilvusConfig":
        """The store settings of the gateway (dim 0: take it from the existing collection)."""
        s = settings
        return cls(
            uri=s.store_uri, collection=collection or s.collection, dim=dim, token=s.store_token, timeout_s=s.store_timeout_s,
            index_type=s.index_type, nlist=s.nlist, nprobe=s.nprobe, filtered_limit=s.filtered_limit,
            overfetch_below=s.overfetch_below, count_cache_s=s.count_cache_s, load_timeout_s=s.store_load_timeout_s,
        )


class SchemaMismatch(Unavailable):
    """The collection was created by an older gateway (or for other models): refuse, say what to do."""


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
    """The product collection on pymilvus MilvusClient."""

    def __init__(self, config: MilvusConfig) -> None:
        self.config = config
        self.dim = config.dim
        self._client = None
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._counts: dict[str, tuple[float, float]] = {}
        self.fused_weights: dict[str, float] | None = None  # recorded in the meta collection
        # pymilvus bounds its retry loop by `timeout` only when it is an int (else it retries 75 times, minutes)
        self._timeout = max(1, int(math.ceil(config.timeout_s)))

    @property
    def meta_collection(self) -> str:
        return self.config.collection + META_SUFFIX

    # -- connection ----------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            self.connect()
        return self._client

    def connect(self) -> None:
        """Open the client, create the collections if missing, load them. Raises Unavailable."""
        from pymilvus import MilvusClient

        with self._lock:
            try:
                uri = self.config.uri
                if "://" not in uri:
                    Path(uri).parent.mkdir(parents=True, exist_ok=True)
                client = MilvusClient(uri=uri, token=self.config.token, timeout=self._timeout)
                self._ensure_collection(client)
                self.fused_weights = self._read_meta(client).get("fused_weights")
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
            if not self.dim:
                raise Unavailable(f"collection {name!r} does not exist yet: it is created once the models say their dimension")
            client.create_collection(name, schema=self._schema(), index_params=self._index_params(client), timeout=timeout)
            log.info("created collection %s (dim %d, %s)", name, self.dim, SCHEMA_TAG)
        else:
            self._check_schema(client)
        started = time.monotonic()
        client.load_collection(name, timeout=max(timeout, int(self.config.load_timeout_s)))
        log.info("collection %s loaded in %.1f s", name, time.monotonic() - started)
        if not client.has_collection(self.meta_collection, timeout=timeout):
            self._create_meta(client)
        client.load_collection(self.meta_collection, timeout=timeout)

    def _check_schema(self, client) -> None:
        info = client.describe_collection(self.config.collection, timeout=self._timeout)
        fields = {f.get("name"): f for f in info.get("fields", [])}
        if info.get("description") != SCHEMA_TAG or KEYWORD_SPARSE_FIELD not in fields or CHANNEL_MASK_FIELD not in fields:
            raise SchemaMismatch(
                f"collection {self.config.collection!r} was created by an older gateway (no {SCHEMA_TAG!r}: cosine fused "
                "vectors, no keyword channel); migrate it with `python -m gateway.maintenance migrate --store-uri ... --collection ...` "
                "(the gateway stopped), or index into a new --collection"
            )
        dim = int(fields[FUSED_FIELD].get("params", {}).get("dim", self.dim))
        if not self.dim:
            self.dim = dim
        if dim != self.dim:
            raise SchemaMismatch(
                f"collection {self.config.collection!r} holds {dim}-d vectors but the models give {self.dim}-d: "
                "use another --collection or store"
            )

    def _schema(self):
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=SCHEMA_TAG)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_LENGTHS["id"])
        for name in ("title", "description", "category", "brand", "caption", "image_uri"):
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_LENGTHS[name])
        schema.add_field("price", DataType.DOUBLE)  # -1 = unknown
        schema.add_field("in_stock", DataType.BOOL)
        schema.add_field(CHANNEL_MASK_FIELD, DataType.INT64)
        # tags and attributes in one JSON field: Milvus Lite 2.5.1 + pymilvus 2.5.18 fail on empty
        # query results when the collection has an ARRAY field, and JSON needs a nested path to filter.
        schema.add_field("meta", DataType.JSON)
        schema.add_field(
            KEYWORD_TEXT_FIELD, DataType.VARCHAR, max_length=MAX_LENGTHS[KEYWORD_TEXT_FIELD],
            enable_analyzer=True, analyzer_params=KEYWORD_ANALYZER,
        )
        schema.add_field(KEYWORD_SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(name="keyword_bm25", function_type=FunctionType.BM25, input_field_names=[KEYWORD_TEXT_FIELD], output_field_names=[KEYWORD_SPARSE_FIELD])
        )
        for name in DENSE_FIELDS:
            schema.add_field(name, DataType.FLOAT_VECTOR, dim=self.dim)
        return schema

    def _index_params(self, client):
        params = client.prepare_index_params()
        ann = {"index_type": self.config.index_type, "metric_type": METRIC}
        if self.config.index_type == "IVF_FLAT":
            ann["params"] = {"nlist": self.config.nlist}
        for name in DENSE_FIELDS:
            params.add_index(field_name=name, **ann)
        params.add_index(field_name=KEYWORD_SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        return params

    # -- the meta collection: the fused weights ------------------------------------------------
    def _create_meta(self, client) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="gateway metadata of " + self.config.collection)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=8192)
        schema.add_field("unused_vec", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
        params = client.prepare_index_params()
        params.add_index(field_name="unused_vec", index_type="FLAT", metric_type="L2")
        client.create_collection(self.meta_collection, schema=schema, index_params=params, timeout=self._timeout)

    def _read_meta(self, client) -> dict[str, Any]:
        rows = client.query(self.meta_collection, filter='key != ""', output_fields=["key", "value"], timeout=self._timeout)
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def write_meta(self, key: str, value: Any) -> None:
        row = {"key": key, "value": json.dumps(value, sort_keys=True), "unused_vec": [0.0, 0.0]}
        self._call("write meta", lambda c, **kw: c.upsert(self.meta_collection, [row], **kw))

    def record_fused_weights(self, weights: dict[str, float]) -> None:
        """Record the weights the fused vectors are built with (first start, or after a rebuild)."""
        self.write_meta("fused_weights", weights)
        self.fused_weights = dict(weights)

    def ping(self) -> bool:
        try:
            self.client.has_collection(self.config.collection, timeout=min(2, self._timeout))
            return True
        except SchemaMismatch:
            raise
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
            for name in DENSE_FIELDS:
                vec = np.asarray(row[name], dtype=np.float32)
                if vec.shape != (self.dim,) or not np.all(np.isfinite(vec)):
                    raise InvalidInput(f"product {row['id']!r}: {name} is not a finite {self.dim}-d vector")
        self._call("upsert", lambda c, **kw: c.upsert(self.config.collection, list(rows), **kw))

    def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by id (ids that do not exist are ignored)."""
        if ids:
            self._call("delete", lambda c, **kw: c.delete(self.config.collection, ids=list(ids), **kw))

    # -- reads ---------------------------------------------------------------------------------
    @staticmethod
    def fields(vectors: bool, keyword_text: bool = False) -> list[str]:
        return SCALAR_FIELDS + (DENSE_FIELDS if vectors else []) + ([KEYWORD_TEXT_FIELD] if keyword_text else [])

    def get(self, ids: Sequence[str], include_vectors: bool = False) -> list[dict[str, Any]]:
        if not ids:
            return []
        return self.query(f"id in {string_list(list(ids))}", self.fields(include_vectors))

    def query(self, expression: str, output_fields: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._call("query", lambda c, **kw: c.query(self.config.collection, filter=expression, output_fields=list(output_fields), **kw))
        return [dict(r) for r in rows]

    def _search_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"metric_type": METRIC}
        if self.config.index_type == "IVF_FLAT":
            params["params"] = {"nprobe": self.config.nprobe}
        return params

    def plan(self, flt: ProductFilter, limit: int) -> SearchPlan:
        """How an ANN search runs. Unfiltered, or a filter most products pass: `limit` from the index.
        A selective filter (matching < `overfetch_below` of the catalog, counted with count(*) and
        cached for `count_cache_s`): ask for `filtered_limit` candidates so the interim index scans
        more lists, then keep `limit` (docs/gateway.md, "How a search runs")."""
        expression = flt.expression()
        if not expression:
            return SearchPlan("", limit)
        fraction = self.matching_fraction(expression)
        if fraction >= self.config.overfetch_below:
            return SearchPlan(expression, limit, fraction)
        return SearchPlan(expression, min(max(limit, self.config.filtered_limit), MAX_LIMIT), fraction)

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

    def ann(
        self, vector: np.ndarray, field_name: str, limit: int, flt: ProductFilter, output_fields: Sequence[str] = ("id",)
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """Nearest rows of one dense field by inner product: (id, q . v, entity), best first."""
        limit = min(limit, MAX_LIMIT)
        plan = self.plan(flt, limit)
        fields = list(output_fields) if plan.limit == limit else ["id"]
        result = self._call(
            "search",
            lambda c, **kw: c.search(
                self.config.collection, data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field=field_name,
                limit=plan.limit, filter=plan.expression, search_params=self._search_params(), output_fields=fields, **kw,
            ),
        )
        hits = [(h["id"], float(h["distance"]), dict(h.get("entity") or {})) for h in result[0][:limit]]
        if plan.limit != limit and len(output_fields) > 1 and hits:
            rows = {r["id"]: r for r in self.query(f"id in {string_list([h[0] for h in hits])}", output_fields)}
            hits = [(i, d, rows[i]) for i, d, _ in hits if i in rows]
        return hits

    def within(self, vector: np.ndarray, field_name: str, ids: Sequence[str]) -> dict[str, tuple[float, int]]:
        """q . v of `field_name` for exactly these ids: id -> (score, channel mask). A filter this
        selective is brute-forced by Milvus (exact); ids it does not return are simply absent."""
        return {i: (d, int(row[CHANNEL_MASK_FIELD])) for i, (d, row) in self.rows_within(vector, field_name, ids, ["id", CHANNEL_MASK_FIELD]).items()}

    def rows_within(
        self, vector: np.ndarray, field_name: str, ids: Sequence[str], output_fields: Sequence[str]
    ) -> dict[str, tuple[float, dict[str, Any]]]:
        """The rows of exactly these ids with q . v of `field_name`: id -> (score, entity), from one search
        restricted to them. Milvus Lite reads rows this way faster than a query by id (10 rows with their four
        vectors at 100k products: 5.7 vs 9.3 ms, docs/gateway.md "Benchmark"); ids it does not return are absent."""
        if not ids:
            return {}
        result = self._call(
            "search",
            lambda c, **kw: c.search(
                self.config.collection, data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field=field_name,
                limit=min(len(ids), MAX_LIMIT), filter=f"id in {string_list(list(ids))}", search_params=self._search_params(),
                output_fields=list(output_fields), **kw,
            ),
        )
        return {h["id"]: (float(h["distance"]), {"id": h["id"], **dict(h.get("entity") or {})}) for h in result[0]}

    def keyword(self, text: str, limit: int, flt: ProductFilter, within: Sequence[str] = ()) -> list[tuple[str, float, int]]:
        """BM25 of `text` against the keyword field: (id, bm25, channel mask), best first; `within` restricts to ids."""
        clauses = [c for c in (flt.expression(), f"id in {string_list(list(within))}" if within else "") if c]
        result = self._call(
            "keyword search",
            lambda c, **kw: c.search(
                self.config.collection, data=[text], anns_field=KEYWORD_SPARSE_FIELD, limit=min(limit, MAX_LIMIT),
                filter=" and ".join(f"({c})" for c in clauses), search_params={"metric_type": "BM25"},
                output_fields=["id", CHANNEL_MASK_FIELD], **kw,
            ),
        )
        return [(h["id"], float(h["distance"]), int(h["entity"][CHANNEL_MASK_FIELD])) for h in result[0]]
