"""Blocking client of the gateway: one channel reused by every call, deadlines, retries on UNAVAILABLE."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.connection import ConnectionConfig, open_channel
from client.errors import GatewayError
from client.messages import ImageLike, SearchFilters, image_bytes, search_request
from client.retry import status_code
from client.batching import batched
from retrieval.v1 import retrieval_pb2 as pb
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

_UNSET: Any = object()


class SearchClient:
    """Typed calls of retrieval.v1.Retrieval. Use as a context manager, or call close()."""

    def __init__(self, address: str | None = None, *, config: ConnectionConfig | None = None, **options: Any) -> None:
        self.config = config or ConnectionConfig.from_env(address=address, **options)
        self._channel = open_channel(self.config)
        self._stub = pb_grpc.RetrievalStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, method: Callable[..., Any], request_factory: Callable[[], Any], timeout: float | None) -> Any:
        """Run one RPC with the retry policy; `timeout` bounds all attempts together."""
        timeout = self.config.timeout if timeout is _UNSET else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self.config.retry
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return method(
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
                time.sleep(wait)

    # -- API ------------------------------------------------------------------------------------
    def search(
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
        """Text, image, or composed search (see client.messages.search_request for the options)."""
        request = search_request(text, image, top_k=top_k, weights=weights, filters=filters, **options)
        return self.search_request(request, timeout=timeout)

    def search_request(self, request: pb.SearchRequest, *, timeout: float | None = _UNSET) -> pb.SearchResponse:
        return self._call(self._stub.Search, lambda: request, timeout)

    def upsert_batch(self, products: Sequence[pb.Product], *, timeout: float | None = _UNSET) -> pb.UpsertProductsResponse:
        """One UpsertProducts stream of these products. Retrying re-sends them all: upserts are idempotent by id."""
        products = list(products)

        def stream() -> Iterator[pb.UpsertProductsRequest]:
            return iter([pb.UpsertProductsRequest(product=p) for p in products])

        return self._call(self._stub.UpsertProducts, stream, timeout)

    def upsert(
        self, products: Iterable[pb.Product], *, batch_size: int = 32, timeout: float | None = _UNSET
    ) -> Iterator[tuple[list[pb.Product], pb.UpsertProductsResponse]]:
        """Stream products in batches (one call each, bounded memory); yields each batch with its results."""
        for batch in batched(products, batch_size):
            yield batch, self.upsert_batch(batch, timeout=timeout)

    def get(self, ids: Sequence[str], *, include_vectors: bool = False, timeout: float | None = _UNSET) -> pb.GetProductsResponse:
        request = pb.GetProductsRequest(ids=list(ids), include_vectors=include_vectors)
        return self._call(self._stub.GetProducts, lambda: request, timeout)

    def delete(self, ids: Sequence[str], *, timeout: float | None = _UNSET) -> pb.DeleteProductsResponse:
        request = pb.DeleteProductsRequest(ids=list(ids))
        return self._call(self._stub.DeleteProducts, lambda: request, timeout)

    def describe(self, image: ImageLike, *, max_tags: int = 0, timeout: float | None = _UNSET) -> pb.DescribeResponse:
        request = pb.DescribeRequest(image=image_bytes(image), max_tags=max_tags)
        return self._call(self._stub.Describe, lambda: request, timeout)

    def embed(
        self, texts: Sequence[str] = (), images: Sequence[ImageLike] = (), *, timeout: float | None = _UNSET
    ) -> pb.EmbedResponse:
        request = pb.EmbedRequest(texts=list(texts), images=[image_bytes(i) for i in images])
        return self._call(self._stub.Embed, lambda: request, timeout)

    def health(self, service: str = "", *, timeout: float | None = 5.0) -> str:
        """grpc.health.v1 status name of `service` ("" = the whole server), e.g. SERVING."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, lambda: request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_serving(self, timeout: float = 60.0, service: str = "") -> None:
        """Poll health until SERVING (the gateway may still be loading models); TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                last = self.health(service, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                if last == "SERVING":
                    return
            except GatewayError as error:
                last = str(error)
            time.sleep(0.2)
        raise TimeoutError(f"gateway at {self.config.address} not SERVING after {timeout:.0f}s: {last}")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SearchClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
