"""asyncio client of the gateway (grpc.aio): same calls and retry rules as client.sync, for many calls in flight."""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.batching import batched
from client.connection import ConnectionConfig, open_aio_channel
from client.errors import GatewayError
from client.messages import ImageLike, SearchFilters, image_bytes, search_request
from client.retry import status_code
from retrieval.v1 import retrieval_pb2 as pb
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

_UNSET: Any = object()


class AsyncSearchClient:
    """Typed async calls of retrieval.v1.Retrieval over one channel. `async with` it, or await close()."""

    def __init__(
        self,
        address: str | None = None,
        *,
        config: ConnectionConfig | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        **options: Any,
    ) -> None:
        self.config = config or ConnectionConfig.from_env(address=address, **options)
        self._channel = open_aio_channel(self.config, channel_options)
        self._stub = pb_grpc.RetrievalStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def _call(self, method: Callable[..., Any], request_factory: Callable[[], Any], timeout: float | None) -> Any:
        timeout = self.config.timeout if timeout is _UNSET else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return await method(
                    request_factory(),
                    timeout=remaining,
                    metadata=self.config.metadata(),
                    compression=self.config.compression_arg(),
                )
            except grpc.RpcError as error:
                code = status_code(error)
                wait = policy.backoff(attempt)
                out_of_time = deadline is not None and time.monotonic() + wait >= deadline
                if not policy.should_retry(code, attempt) or out_of_time:
                    raise GatewayError.from_rpc(error, attempt) from error
                await asyncio.sleep(wait)

    async def search(
        self,
        text: str = "",
        image: ImageLike | None = None,
        *,
        top_k: int = 0,
        weights: dict[str, float] | None = None,
        filters: SearchFilters | None = None,
        timeout: float | None = _UNSET,
        **options: Any,
    ) -> pb.SearchResponse:
        request = search_request(text, image, top_k=top_k, weights=weights, filters=filters, **options)
        return await self.search_request(request, timeout=timeout)

    async def search_request(self, request: pb.SearchRequest, *, timeout: float | None = _UNSET) -> pb.SearchResponse:
        return await self._call(self._stub.Search, lambda: request, timeout)

    async def upsert_batch(self, products: Sequence[pb.Product], *, timeout: float | None = _UNSET) -> pb.UpsertProductsResponse:
        """One UpsertProducts stream; a retry re-sends the whole batch (idempotent by id)."""
        products = list(products)
        return await self._call(
            self._stub.UpsertProducts, lambda: iter([pb.UpsertProductsRequest(product=p) for p in products]), timeout
        )

    async def upsert(
        self, products: Iterable[pb.Product], *, batch_size: int = 32, timeout: float | None = _UNSET
    ) -> AsyncIterator[tuple[list[pb.Product], pb.UpsertProductsResponse]]:
        """Batches of `products`, one stream each, in order; yields each batch with its results."""
        for batch in batched(products, batch_size):
            yield batch, await self.upsert_batch(batch, timeout=timeout)

    async def get(self, ids: Sequence[str], *, include_vectors: bool = False, timeout: float | None = _UNSET) -> pb.GetProductsResponse:
        request = pb.GetProductsRequest(ids=list(ids), include_vectors=include_vectors)
        return await self._call(self._stub.GetProducts, lambda: request, timeout)

    async def delete(self, ids: Sequence[str], *, timeout: float | None = _UNSET) -> pb.DeleteProductsResponse:
        request = pb.DeleteProductsRequest(ids=list(ids))
        return await self._call(self._stub.DeleteProducts, lambda: request, timeout)

    async def describe(self, image: ImageLike, *, max_tags: int = 0, timeout: float | None = _UNSET) -> pb.DescribeResponse:
        request = pb.DescribeRequest(image=image_bytes(image), max_tags=max_tags)
        return await self._call(self._stub.Describe, lambda: request, timeout)

    async def embed(
        self, texts: Sequence[str] = (), images: Sequence[ImageLike] = (), *, timeout: float | None = _UNSET
    ) -> pb.EmbedResponse:
        request = pb.EmbedRequest(texts=list(texts), images=[image_bytes(i) for i in images])
        return await self._call(self._stub.Embed, lambda: request, timeout)

    async def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health.Check, lambda: request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def wait_until_serving(self, timeout: float = 60.0, service: str = "") -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = await self.health(service, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except GatewayError as error:
                last = str(error)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"gateway at {self.config.address} not SERVING after {timeout:.0f}s: {last}")

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncSearchClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
