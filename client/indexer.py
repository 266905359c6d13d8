"""`index`: stream a catalog into the gateway in batches, with progress, resume and a failure file.

Rows are read lazily; rows already acknowledged (client.resume) are skipped before their image
is read (or fetched: rows with an `image_url` are downloaded by client.fetch, a batch's downloads
concurrently, bounded in all and per host, cached on disk); up to `concurrency` batches are in
flight, each one UpsertProducts stream. Ctrl-C stops
sending new batches, waits for the ones in flight (their acknowledgements are saved) and prints
the summary; a second Ctrl-C abandons them.
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from client.aio import AsyncSearchClient
from client.catalog import CatalogRow, count_rows, read_catalog
from client.connection import ConnectionConfig
from client.errors import GatewayError
from client.fetch import FetchError, FetchOptions, FetchStats, ImageFetcher
from client.resume import ResumeState
from retrieval.v1 import retrieval_pb2 as pb


@dataclass
class IndexSummary:
    total: int = 0  # rows in the catalog
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already acknowledged in an earlier run
    seconds: float = 0.0
    interrupted: bool = False
    stopped: str = ""  # why the run stopped early on its own (the gateway went away)
    reasons: Counter = field(default_factory=Counter)
    failed_path: str = ""
    state_path: str = ""
    fetch: FetchStats = field(default_factory=FetchStats)

    @property
    def pending(self) -> int:
        return max(0, self.total - self.ok - self.failed - self.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "not_sent": self.pending,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "failure_reasons": dict(self.reasons.most_common()),
            "failed_file": self.failed_path,
            "state_file": self.state_path,
            "image_urls": self.fetch.as_dict(),
        }

    def lines(self) -> list[str]:
        rate = self.ok / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"{'interrupted' if self.interrupted else 'stopped' if self.stopped else 'done'} in {self.seconds:.1f}s: "
            f"ok {self.ok}, failed {self.failed}, skipped {self.skipped} already indexed"
            + (f", not sent {self.pending}" if self.pending else "")
            + f" ({rate:.1f} rows/s)"
        ]
        f = self.fetch
        if f.fetched or f.cache_hits or f.failed:
            out.append(f"image URLs: {f.fetched} fetched ({f.bytes / 1e6:.1f} MB, {f.retries} retries), {f.cache_hits} from the cache, "
                       f"{f.failed} failed")
        for reason, count in self.reasons.most_common(5):
            out.append(f"  failed x{count}: {reason}")
        if self.failed:
            out.append(f"failed rows written to {self.failed_path}")
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
        if self.interrupted or self.stopped:
            out.append(f"progress saved in {self.state_path}; run the same command again to resume")
        return out


@dataclass
class IndexOptions:
    catalog: Path
    state_path: Path
    failed_path: Path
    batch_size: int = 32
    concurrency: int = 2
    max_rate: float = 0.0  # rows per second; 0 = as fast as the gateway goes
    restart: bool = False
    progress: bool = True
    fetch: FetchOptions = field(default_factory=FetchOptions)


class _Failures:
    """Failed rows as JSONL (the original row + line + reason), opened on the first failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        if path.exists():
            path.unlink()  # the file describes this run only

    def write(self, row: CatalogRow, reason: str) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w", encoding="utf-8")
        record = {"line": row.line, "id": row.id, "reason": reason, "row": row.raw}
        self._handle.write(json.dumps(record, default=str) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", dynamic_ncols=True, disable=not enabled, file=sys.stderr, smoothing=0.1)


async def index_catalog(config: ConnectionConfig, options: IndexOptions) -> IndexSummary:
    summary = IndexSummary(failed_path=str(options.failed_path), state_path=str(options.state_path))
    state = ResumeState(options.state_path, config.address)
    if options.restart:
        state.reset()
    else:
        state.load()
        if state.note:
            print(state.note, file=sys.stderr)
    failures = _Failures(options.failed_path)
    summary.total = count_rows(options.catalog)
    queue: asyncio.Queue[list[tuple[CatalogRow, pb.Product]] | None] = asyncio.Queue(maxsize=options.concurrency)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    bar = _progress_bar(summary.total, 0, options.progress)

    def fail(row: CatalogRow, reason: str) -> None:
        summary.failed += 1
        summary.reasons[reason[:160]] += 1
        failures.write(row, reason)

    async def load(row: CatalogRow) -> pb.Product | None:
        """The row's message with its image read or fetched; None (and a failure recorded) if that fails."""
        try:
            if row.error is None and row.image_url is not None:
                try:
                    data = await fetcher.fetch(row.image_url)
                except FetchError as error:
                    raise ValueError(f"cannot fetch image_url: {error}") from None
                return row.product(data)
            return await asyncio.to_thread(row.product)  # file reads off the event loop
        except (OSError, ValueError) as error:
            fail(row, row.error or (str(error) if row.image_url else f"cannot read image: {error}"))
            bar.update(1)
            return None

    async def emit(rows: list[CatalogRow]) -> int:
        products = await asyncio.gather(*(load(row) for row in rows))
        batch = [(row, product) for row, product in zip(rows, products) if product is not None]
        if batch:
            await queue.put(batch)
        return len(batch)

    async def produce() -> None:
        rows: list[CatalogRow] = []
        sent_rows = 0
        for row in read_catalog(options.catalog):
            if stop.is_set():
                break
            if row.error is None and state.is_done(row.id, row.fingerprint):
                summary.skipped += 1
                bar.update(1)
                continue
            rows.append(row)
            if len(rows) >= options.batch_size:
                sent_rows += await emit(rows)
                rows = []
                if options.max_rate > 0:  # throttle: stay under max_rate rows/s on average
                    ahead = started + sent_rows / options.max_rate - time.monotonic()
                    if ahead > 0:
                        try:
                            await asyncio.wait_for(stop.wait(), ahead)
                        except asyncio.TimeoutError:
                            pass
        if rows and not stop.is_set():
            await emit(rows)
        for _ in range(options.concurrency):
            await queue.put(None)

    async def consume(client: AsyncSearchClient) -> None:
        while (batch := await queue.get()) is not None:
            if stop.is_set():
                continue  # interrupted: queued batches are not sent
            try:
                response = await client.upsert_batch([product for _, product in batch])
            except GatewayError as error:
                for row, _ in batch:
                    fail(row, str(error))
                bar.update(len(batch))
                if error.code == grpc.StatusCode.UNAVAILABLE and not stop.is_set():
                    # Retries are spent: the gateway is down. Stop instead of failing every remaining row.
                    summary.stopped = f"gateway unavailable ({error.details})"
                    stop.set()
                continue
            acknowledged = []
            answered = set()
            for result in response.results:
                if not 0 <= result.index < len(batch):
                    continue
                row = batch[result.index][0]
                answered.add(result.index)
                if result.status == pb.ITEM_STATUS_OK:
                    acknowledged.append((row.id, row.fingerprint))
                else:
                    fail(row, f"{pb.ItemStatus.Name(result.status).removeprefix('ITEM_STATUS_')}: {result.reason}")
            for position, (row, _) in enumerate(batch):
                if position not in answered:
                    fail(row, "no result from the gateway for this row")
            state.record(acknowledged)
            summary.ok += len(acknowledged)
            bar.update(len(batch))

    def on_interrupt() -> None:
        if stop.is_set():
            for task in tasks:
                task.cancel()
            return
        stop.set()
        bar.write("interrupted: finishing the batches in flight (Ctrl-C again to abandon them)", file=sys.stderr)

    async with AsyncSearchClient(config=config) as client, ImageFetcher(options.fetch) as fetcher:
        summary.fetch = fetcher.stats
        tasks = [asyncio.ensure_future(produce())] + [asyncio.ensure_future(consume(client)) for _ in range(options.concurrency)]
        handled = False
        try:
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            handled = True
        except (NotImplementedError, RuntimeError):  # not the main thread / not supported
            pass
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            pass
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
            for task in tasks:
                task.cancel()
            state.close()
            failures.close()
            bar.close()
    summary.interrupted = stop.is_set() and not summary.stopped
    summary.seconds = time.monotonic() - started
    return summary
