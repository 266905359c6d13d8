"""Cross-request micro-batching: the batcher itself, the local backend on the tiny export, and the gateway."""
from __future__ import annotations

import asyncio
import io
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from gateway.batching import MicroBatcher
from gateway.settings import load_settings
from tests.conftest import encode


class Recorder:
    """A model call that records the batch sizes it saw and returns each row's sum (so order is checked)."""

    def __init__(self, seconds: float = 0.0, fail_on: float | None = None) -> None:
        self.sizes: list[int] = []
        self.seconds = seconds
        self.fail_on = fail_on
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, items: np.ndarray) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.sizes.append(len(items))
            time.sleep(self.seconds)
            if self.fail_on is not None and (items == self.fail_on).any():
                raise RuntimeError("graph call failed")
            return items.sum(axis=1, keepdims=True)
        finally:
            with self._lock:
                self.active -= 1


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    model = Recorder(seconds=0.05)

    async def main():
        batcher = MicroBatcher("t", model, ThreadPoolExecutor(2), max_batch=32, max_delay_s=0.02)
        outs = await asyncio.gather(*(batcher.submit(np.full((1, 3), i, np.float32)) for i in range(16)))
        await batcher.close()
        return outs

    outs = _run(main())
    assert [float(o[0, 0]) for o in outs] == [3.0 * i for i in range(16)]
    assert sum(model.sizes) == 16 and len(model.sizes) < 16, model.sizes
    assert max(model.sizes) >= 8


def test_max_batch_bounds_each_call_and_calls_never_overlap():
    model = Recorder(seconds=0.01)

    async def main():
        batcher = MicroBatcher("t", model, ThreadPoolExecutor(4), max_batch=4, max_delay_s=0.01)
        requests = [np.full((n, 2), n, np.float32) for n in (1, 3, 2, 2, 1, 9)]  # 9 > max_batch: chunked
        outs = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.close()
        return requests, outs

    requests, outs = _run(main())
    assert max(model.sizes) <= 4 and sum(model.sizes) == 18
    assert model.max_active == 1  # one call per model at a time, like one Triton instance
    for request, out in zip(requests, outs):
        assert out.shape == (len(request), 1) and np.allclose(out[:, 0], request.sum(axis=1))


def test_lone_request_waits_at_most_the_delay():
    model = Recorder()

    async def main():
        batcher = MicroBatcher("t", model, ThreadPoolExecutor(1), max_batch=64, max_delay_s=0.05)
        start = time.perf_counter()
        await batcher.submit(np.ones((1, 2), np.float32))
        waited = time.perf_counter() - start
        await batcher.close()
        return waited

    assert 0.04 <= _run(main()) < 1.0


def test_a_failed_call_fails_its_batch_only_and_the_worker_goes_on():
    model = Recorder(fail_on=-1.0)

    async def main():
        batcher = MicroBatcher("t", model, ThreadPoolExecutor(1), max_batch=1, max_delay_s=0)
        bad, good = await asyncio.gather(
            batcher.submit(np.full((1, 2), -1.0, np.float32)), batcher.submit(np.ones((1, 2), np.float32)), return_exceptions=True
        )
        after = await batcher.submit(np.ones((1, 2), np.float32))
        await batcher.close()
        return bad, good, after

    bad, good, after = _run(main())
    assert isinstance(bad, RuntimeError) and "graph call failed" in str(bad)
    assert float(good[0, 0]) == 2.0 and float(after[0, 0]) == 2.0


def test_a_cancelled_caller_is_dropped_from_its_batch():
    model = Recorder(seconds=0.05)

    async def main():
        batcher = MicroBatcher("t", model, ThreadPoolExecutor(1), max_batch=8, max_delay_s=0.2)
        first = asyncio.ensure_future(batcher.submit(np.ones((1, 2), np.float32)))
        second = asyncio.ensure_future(batcher.submit(np.full((5, 2), 2.0, np.float32)))
        await asyncio.sleep(0.01)
        first.cancel()
        out = await second
        await batcher.close()
        return out

    out = _run(main())
    assert out.shape == (5, 1) and model.sizes == [5]


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher("t", Recorder(), ThreadPoolExecutor(1), max_batch=0, max_delay_s=0)
    with pytest.raises(Exception, match="batch_max_size"):
        load_settings(["--batch-max-size", "0"])


# -- the local backend on the tiny export -------------------------------------------------------
def _backend(repository, **overrides):
    from gateway.backends.local import LocalBackend

    settings = load_settings(model_repository=str(repository), caption=False, inference_threads=1, **overrides)
    return LocalBackend(settings)


def test_local_backend_batches_across_callers_and_matches_unbatched(tiny_repository, real_photos):
    from gateway.metrics import BATCH_SIZE
    from preprocessing.image import ImageDecodeError

    blobs = [encode(photo.convert("RGB")) for photo in real_photos.values()]
    texts = [f"red cotton shirt {i}" for i in range(12)]

    async def run(backend):
        await backend.start()
        try:
            images = await asyncio.gather(*(backend.embed_images([b]) for b in blobs), backend.embed_images([b"not an image"]), return_exceptions=True)
            vectors = await asyncio.gather(*(backend.embed_texts([t]) for t in texts))
            decoded = await backend.embed_images([Image.open(io.BytesIO(blobs[1])).convert("RGB")])  # pre-decoded images are accepted
            return images, vectors, decoded
        finally:
            await backend.close()

    before = BATCH_SIZE.labels("clip_text")._sum.get()
    batched_images, batched_texts, decoded = asyncio.run(run(_backend(tiny_repository, batch_max_size=32, batch_max_delay_ms=20)))
    assert BATCH_SIZE.labels("clip_text")._sum.get() - before == len(texts)
    plain_images, plain_texts, _ = asyncio.run(run(_backend(tiny_repository, batch_max_size=1)))

    assert isinstance(batched_images[-1], ImageDecodeError)  # the bad image failed its own caller only
    for got, want in zip(batched_images[:-1], plain_images[:-1]):
        assert np.allclose(got, want, atol=1e-5)
    for got, want in zip(batched_texts, plain_texts):
        assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(decoded, batched_images[1], atol=1e-5)


# -- through the real gateway ---------------------------------------------------------------------
def test_gateway_batches_concurrent_searches(tiny_repository, tmp_path):
    import grpc

    from tests.gateway_fixtures import pb, png, start_gateway
    from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

    gateway = start_gateway(tiny_repository, str(tmp_path / "b.db"), tmp_path, "--batch-max-size", "16", "--batch-max-delay-ms", "50", "--caption", "false")
    try:
        items = [pb.UpsertProductsRequest(product=pb.Product(id=f"p{i}", title=f"product {i}", image=png(i))) for i in range(6)]
        bad = pb.UpsertProductsRequest(product=pb.Product(id="bad", title="broken", image=b"\x89PNG broken"))
        response = gateway.stub.UpsertProducts(iter([*items[:3], bad, *items[3:]]), timeout=60)
        assert (response.ok, response.invalid) == (6, 1)

        async def searches():
            async with grpc.aio.insecure_channel(gateway.address) as channel:
                stub = pb_grpc.RetrievalStub(channel)
                calls = [stub.Search(pb.SearchRequest(text=f"product {i % 6}", top_k=3), timeout=30) for i in range(16)]
                calls.append(stub.Search(pb.SearchRequest(image=b"not an image", top_k=3), timeout=30))
                return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(searches())
        assert all(len(r.hits) == 3 for r in results[:-1]), results
        assert isinstance(results[-1], grpc.aio.AioRpcError) and results[-1].code() == grpc.StatusCode.INVALID_ARGUMENT
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).read().decode()
        counts = {
            line.split("{")[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("batch_size_") and 'model="clip_text"' in line and ("_count" in line or "_sum" in line)
        }
        # 16 concurrent queries (plus ingest's title/caption texts) ran in fewer calls than items
        assert counts["batch_size_sum"] >= 16 and counts["batch_size_count"] < counts["batch_size_sum"], counts
    finally:
        gateway.stop()
