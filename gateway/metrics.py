"""Prometheus metrics of the gateway (own HTTP port) and per-request stage timers.

rpc_requests_total{rpc, code}          requests by final gRPC status
rpc_latency_seconds{rpc}               end-to-end latency inside the gateway
stage_latency_seconds{rpc, stage}      preprocess (validation, decoding, fusion, filters),
                                       inference (backend calls), store (Milvus calls)
upsert_items_total{status}             upserted items by per-item status
dependency_up{dependency}              1 while the backend / store answers the health probe
batch_size{model}                      items per ONNX Runtime call of the local backend's batcher
batch_queue_seconds{model}             time a request waited in the batcher before its call began
The same stage times go back to the caller as `server-timing` trailing metadata (and in
SearchResponse.timings), which is how the benchmark measures gateway overhead.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

RPC_REQUESTS = Counter("rpc_requests", "gRPC requests by method and status code", ["rpc", "code"], registry=REGISTRY)
RPC_LATENCY = Histogram("rpc_latency_seconds", "gRPC latency inside the gateway", ["rpc"], buckets=_BUCKETS, registry=REGISTRY)
STAGE_LATENCY = Histogram(
    "stage_latency_seconds", "time per request stage", ["rpc", "stage"], buckets=_BUCKETS, registry=REGISTRY
)
UPSERT_ITEMS = Counter("upsert_items", "upserted products by item status", ["status"], registry=REGISTRY)
DEPENDENCY_UP = Gauge("dependency_up", "1 when the dependency answers the health probe", ["dependency"], registry=REGISTRY)

BATCH_SIZE = Histogram(
    "batch_size", "items per model call formed by the local backend's micro-batcher", ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY,
)
BATCH_QUEUE_SECONDS = Histogram(
    "batch_queue_seconds", "time a request waited in the micro-batcher queue", ["model"], buckets=_BUCKETS, registry=REGISTRY
)

STAGES = ("preprocess", "inference", "store")


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on its own port (prometheus_client's threaded HTTP server)."""
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


class StageTimer:
    """Accumulates seconds per stage for one request; `total` runs from construction."""

    def __init__(self, rpc: str) -> None:
        self.rpc = rpc
        self.started = time.perf_counter()
        self.seconds = {stage: 0.0 for stage in STAGES}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def total(self) -> float:
        return time.perf_counter() - self.started

    def observe(self) -> None:
        for stage, seconds in self.seconds.items():
            if seconds:
                STAGE_LATENCY.labels(self.rpc, stage).observe(seconds)

    def server_timing(self) -> str:
        """A Server-Timing header value: `preprocess;dur=0.12, inference;dur=3.4, store;dur=1.9, total;dur=5.6` (ms)."""
        parts = [f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in self.seconds.items()]
        parts.append(f"total;dur={self.total() * 1000:.3f}")
        return ", ".join(parts)


def parse_server_timing(value: str) -> dict[str, float]:
    """`server-timing` metadata -> {stage: milliseconds} (clients and the benchmark use it)."""
    out = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if name and rest:
            out[name] = float(rest)
    return out
