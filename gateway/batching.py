"""Cross-request micro-batching: concurrent embed calls share one ONNX Runtime call.

Like Triton's dynamic batcher: requests (each a stacked array of one or more preprocessed items)
queue per model; while the model is busy the queue fills, and when it is free the worker takes as
many queued requests as fit in `max_batch` items, waiting at most `max_delay_s` after the oldest
arrived for a fuller batch. One call per model runs at a time, so at concurrency 16 the model sees
batches of about 16 instead of 16 calls of 1 competing for the same cores.

Per-item errors never reach the batch: callers preprocess (decode, tokenize) their own items
before submitting, so a bad image fails its caller only. A failure of the graph call itself (rare:
out of memory) fails the requests of that batch and the worker goes on with the next.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gateway.metrics import BATCH_QUEUE_SECONDS, BATCH_SIZE


@dataclass
class _Request:
    items: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Batches `infer(stacked_items) -> [n, dim]` across concurrent `submit` calls of one model.

    A request larger than `max_batch` runs on its own in chunks of `max_batch` (ingest sends
    batches of settings.max_batch), still one call at a time on the model.
    """

    def __init__(self, name: str, infer: Callable[[np.ndarray], np.ndarray], executor: Executor, max_batch: int, max_delay_s: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.name = name
        self.infer = infer
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max(0.0, max_delay_s)
        self._queue: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False

    async def submit(self, items: np.ndarray) -> np.ndarray:
        """Embed `items` (stacked along axis 0) in whatever batch the worker forms; rows come back in order."""
        if self._closed:
            raise RuntimeError(f"{self.name} batcher is closed")
        if len(items) == 0:
            raise ValueError("submit needs at least one item")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name=f"batcher-{self.name}")
        request = _Request(items, loop.create_future())
        self._queue.append(request)
        self._wakeup.set()
        return await request.future

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for request in self._queue:
            if not request.future.done():
                request.future.set_exception(RuntimeError(f"{self.name} batcher closed"))
        self._queue.clear()

    # -- worker --------------------------------------------------------------------------------
    def _queued_items(self) -> int:
        return sum(len(r.items) for r in self._queue)

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._wait_for_batch()
            batch = self._take()
            await self._execute(batch)

    async def _wait_for_batch(self) -> None:
        """Until the batch is full or the oldest request has waited max_delay_s."""
        deadline = self._queue[0].arrived + self.max_delay_s
        while self._queued_items() < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """The oldest requests that fit in max_batch (at least one, even if it alone is larger)."""
        batch = [self._queue.pop(0)]
        total = len(batch[0].items)
        while self._queue and total + len(self._queue[0].items) <= self.max_batch:
            request = self._queue.pop(0)
            batch.append(request)
            total += len(request.items)
        return batch

    async def _execute(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # a caller that was cancelled is dropped
        if not live:
            return
        now = time.perf_counter()
        for request in live:
            BATCH_QUEUE_SECONDS.labels(self.name).observe(now - request.arrived)
        stacked = live[0].items if len(live) == 1 else np.concatenate([r.items for r in live])
        try:
            output = await asyncio.get_running_loop().run_in_executor(self.executor, self._infer_chunks, stacked)
        except Exception as exc:  # noqa: BLE001 - the graph call failed: its callers learn why
            for request in live:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in live:
            end = start + len(request.items)
            if not request.future.done():
                request.future.set_result(output[start:end])
            start = end

    def _infer_chunks(self, stacked: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(stacked), self.max_batch):
            chunk = stacked[start : start + self.max_batch]
            BATCH_SIZE.labels(self.name).observe(len(chunk))
            parts.append(self.infer(chunk))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
