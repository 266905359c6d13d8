"""One closed-loop driver for both systems: N workers, each sends its next query when the last returns.

The same driver, queries and client process measure our gateway (grpc.aio) and clip-retrieval's
clip_back (aiohttp, its HTTP+JSON API), so client-side cost is alike. Errors are counted, never
retried; QPS = successful queries / step seconds.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Awaitable, Callable

import numpy as np

TEXT_QUERIES = [
    "red cotton shirt", "black leather boots", "blue denim jacket", "white running shoes", "grey wool pullover",
    "navy summer dress", "brown leather bag", "beige linen trousers", "olive canvas sneakers", "striped silk scarf",
    "green hooded coat", "pink floral blouse", "yellow rain jacket", "silver ankle boots", "purple knit sweater",
    "orange beach sandals",
]


def query_image(width: int = 320, height: int = 240) -> bytes:
    """A 320x240 JPEG of a real photograph (scikit-image's coffee cup, resized), the image query."""
    from PIL import Image

    try:
        from skimage import data

        photo = Image.fromarray(data.coffee())
    except ImportError:
        from export.sample_inputs import sample_images

        photo = sample_images(1)[0]
    buffer = io.BytesIO()
    photo.convert("RGB").resize((width, height)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def closed_loop(send: Callable[[int], Awaitable[None]], concurrency: int, seconds: float, warmup: float = 1.0) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = [0]

    async def worker(end: float, record: bool) -> None:
        while time.perf_counter() < end:
            i = counter[0]
            counter[0] += 1
            t0 = time.perf_counter()
            try:
                await send(i)
            except Exception as exc:  # noqa: BLE001 - an error is a result
                if record:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if record:
                latencies.append((time.perf_counter() - t0) * 1000)

    if warmup > 0:
        end = time.perf_counter() + warmup
        await asyncio.gather(*(worker(end, False) for _ in range(concurrency)))
    started = time.perf_counter()
    end = started + seconds
    await asyncio.gather(*(worker(end, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat = np.asarray(latencies)
    return {
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "qps": round(len(latencies) / elapsed, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
    }


class GatewayClient:
    """Search on our gateway; also collects the server-timing stages of each answer."""

    def __init__(self, address: str, top_k: int = 10) -> None:
        import grpc

        from retrieval.v1 import retrieval_pb2 as pb
        from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

        self.pb = pb
        self.channel = grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = pb_grpc.RetrievalStub(self.channel)
        self.top_k = top_k
        self.timings: list[dict[str, float]] = []

    async def search(self, text: str = "", image: bytes = b"") -> None:
        from gateway.metrics import parse_server_timing

        call = self.stub.Search(self.pb.SearchRequest(text=text, image=image, top_k=self.top_k), timeout=60)
        response = await call
        if len(response.hits) == 0:
            raise RuntimeError("no hits")
        trailing = await call.trailing_metadata()
        value = dict(trailing or ()).get("server-timing")
        if value:
            self.timings.append(parse_server_timing(value))

    async def close(self) -> None:
        await self.channel.close()


class PeerClient:
    """clip_back's /knn-service: the request its own front end sends (modality image = the image index)."""

    def __init__(self, url: str, top_k: int = 10) -> None:
        import aiohttp

        self.url = url
        self.top_k = top_k
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=120))

    async def search(self, text: str = "", image: bytes = b"") -> None:
        body = {"modality": "image", "num_images": self.top_k, "indice_name": "products"}
        if text:
            body["text"] = text
        else:
            body["image"] = base64.b64encode(image).decode()
        async with self.session.post(self.url, data=json.dumps(body)) as response:
            response.raise_for_status()
            hits = await response.json()
            if not hits:
                raise RuntimeError("no hits")

    async def close(self) -> None:
        await self.session.close()
