"""`load`: a perf_analyzer-like load generator for the gateway's API.

Each step runs either N closed-loop workers (concurrency sweep: every worker sends its next
request when the previous one returns) or an open-loop schedule at a target rate (requests start
at fixed intervals, at most `max_in_flight` at once). A step ends when it has sent `requests`
requests or `duration` seconds have passed, whichever comes first; requests in flight then
finish and are counted, so per step ok + errors == sent, and QPS = ok / step seconds. Workers
share a few channels (`channels`; each its own TCP connection). Calls are never retried here:
an error is a result. Load goes only to the address in the config.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client.aio import AsyncSearchClient
from client.connection import ConnectionConfig
from client.errors import GatewayError
from client.retry import NO_RETRY
from client.workload import Workload


@dataclass
class LoadPlan:
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    rates: list[float] = field(default_factory=list)  # requests/s; when set, replaces the concurrency sweep
    requests: int = 0  # per step; 0 = bounded by duration only
    duration: float = 10.0  # seconds per step
    warmup: float = 1.0  # seconds of unrecorded load before the first step
    channels: int = 1
    max_in_flight: int = 256  # rate mode
    timeout: float = 30.0
    cleanup: bool = True  # delete the products that upserts created


@dataclass
class StepResult:
    mode: str  # "concurrency" | "rate"
    level: float
    sent: int
    ok: int
    errors: dict[str, int]
    seconds: float
    latencies_ms: np.ndarray
    kinds: dict[str, dict[str, int]]
    late: int = 0  # rate mode: requests that started > 10 ms after their slot (the client or server could not keep up)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def qps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else None

    def as_dict(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "mode": self.mode,
            self.mode: self.level if self.mode == "rate" else int(self.level),
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.error_count,
            "errors_by_code": dict(self.errors),
            "seconds": round(self.seconds, 4),
            "qps": round(self.qps, 3),
            "latency_ms": {
                "p50": _round(self.percentile(50)),
                "p95": _round(self.percentile(95)),
                "p99": _round(self.percentile(99)),
                "max": _round(float(lat.max()) if lat.size else None),
                "mean": _round(float(lat.mean()) if lat.size else None),
            },
            "by_kind": self.kinds,
            "late": self.late,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class _Recorder:
    """Counts and OK latencies of one step."""

    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.errors: Counter = Counter()
        self.latencies: list[float] = []
        self.kinds: dict[str, Counter] = {}
        self.late = 0

    def record(self, kind: str, code: str, seconds: float) -> None:
        by_kind = self.kinds.setdefault(kind, Counter(sent=0, ok=0, errors=0))
        by_kind["sent"] += 1
        if code == "OK":
            self.ok += 1
            by_kind["ok"] += 1
            self.latencies.append(seconds * 1000.0)
        else:
            self.errors[code] += 1
            by_kind["errors"] += 1


async def _send(client: AsyncSearchClient, workload: Workload, recorder: _Recorder | None, timeout: float) -> None:
    kind, request = workload.next()
    if recorder is not None:
        recorder.sent += 1
    started = time.perf_counter()
    code = "OK"
    try:
        if kind == "upsert":
            response = await client.upsert_batch(request, timeout=timeout)  # type: ignore[arg-type]
            if response.ok != len(request):  # type: ignore[arg-type]
                code = "ITEM_NOT_OK"
        elif kind == "get":
            await client.get(request, timeout=timeout)  # type: ignore[arg-type]
        else:
            await client.search_request(request, timeout=timeout)  # type: ignore[arg-type]
    except GatewayError as error:
        code = error.code.name if error.code is not None else "UNKNOWN"
    except Exception as error:  # noqa: BLE001 - a client-side failure is still a result of the step
        code = type(error).__name__
    if recorder is not None:
        recorder.record(kind, code, time.perf_counter() - started)


async def _closed_loop(clients: list[AsyncSearchClient], workload: Workload, workers: int, plan: LoadPlan, recorder: _Recorder | None, duration: float, limit: int) -> float:
    started = time.monotonic()
    end = started + duration
    budget = [limit]

    async def worker(index: int) -> None:
        client = clients[index % len(clients)]
        while time.monotonic() < end:
            if limit:
                if budget[0] <= 0:
                    return
                budget[0] -= 1
            await _send(client, workload, recorder, plan.timeout)

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return time.monotonic() - started


async def _open_loop(clients: list[AsyncSearchClient], workload: Workload, rate: float, plan: LoadPlan, recorder: _Recorder, duration: float, limit: int) -> float:
    started = time.monotonic()
    gate = asyncio.Semaphore(plan.max_in_flight)
    tasks: list[asyncio.Task] = []
    n = 0
    while True:
        slot = started + n / rate
        if slot >= started + duration or (limit and n >= limit):
            break
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        if time.monotonic() - slot > 0.010:
            recorder.late += 1

        async def one(client: AsyncSearchClient) -> None:
            try:
                await _send(client, workload, recorder, plan.timeout)
            finally:
                gate.release()

        tasks.append(asyncio.ensure_future(one(clients[n % len(clients)])))
        n += 1
    await asyncio.gather(*tasks)
    return time.monotonic() - started


async def run_load(config: ConnectionConfig, workload: Workload, plan: LoadPlan, on_step=None) -> list[StepResult]:
    """Warm up, then run every step of the plan in order; `on_step(result)` is called after each."""
    from dataclasses import replace

    config = replace(config, retry=NO_RETRY, timeout=plan.timeout)
    # Separate subchannel pools: each channel gets its own TCP connection (HTTP/2 stream limits).
    options = [("grpc.use_local_subchannel_pool", 1)]
    clients = [AsyncSearchClient(config=config, channel_options=options) for _ in range(max(1, plan.channels))]
    results: list[StepResult] = []
    try:
        await clients[0].wait_until_serving(timeout=min(60.0, plan.timeout * 2))
        if plan.warmup > 0:
            first = plan.concurrency[0] if not plan.rates else 1
            await _closed_loop(clients, workload, max(1, first), plan, None, plan.warmup, 0)
        steps = [("rate", r) for r in plan.rates] if plan.rates else [("concurrency", c) for c in plan.concurrency]
        for mode, level in steps:
            recorder = _Recorder()
            if mode == "rate":
                seconds = await _open_loop(clients, workload, float(level), plan, recorder, plan.duration, plan.requests)
            else:
                seconds = await _closed_loop(clients, workload, int(level), plan, recorder, plan.duration, plan.requests)
            result = StepResult(
                mode=mode,
                level=level,
                sent=recorder.sent,
                ok=recorder.ok,
                errors=dict(recorder.errors),
                seconds=seconds,
                latencies_ms=np.asarray(recorder.latencies, dtype=np.float64),
                kinds={k: dict(v) for k, v in recorder.kinds.items()},
                late=recorder.late,
            )
            results.append(result)
            if on_step is not None:
                on_step(result)
    finally:
        if plan.cleanup and workload.upserted:
            try:
                for start in range(0, len(workload.upserted), 1000):
                    await clients[0].delete(workload.upserted[start : start + 1000], timeout=30.0)
            except GatewayError:
                pass
        for client in clients:
            await client.close()
    return results
