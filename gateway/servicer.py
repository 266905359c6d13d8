"""The retrieval.v1.Retrieval servicer: thin. Times the call, runs the logic, maps errors to codes."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import grpc

from gateway import describe as describe_rpc
from gateway import ingest, products
from gateway import search as search_rpc
from gateway.core import Core
from gateway.errors import status_of
from gateway.metrics import RPC_LATENCY, RPC_REQUESTS, StageTimer
from retrieval.v1 import retrieval_pb2 as pb
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

log = logging.getLogger("gateway.servicer")


class RetrievalServicer(pb_grpc.RetrievalServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _handle(self, rpc: str, context: grpc.aio.ServicerContext, logic: Callable[[StageTimer], Awaitable[Any]]) -> Any:
        timer = StageTimer(rpc)
        code = grpc.StatusCode.OK
        try:
            response = await logic(timer)
            if isinstance(response, pb.SearchResponse):
                response.timings.CopyFrom(_timings(timer))
            return response
        except Exception as exc:  # noqa: BLE001 - every error leaves as a status code
            code = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", rpc)
                message = f"internal error: {type(exc).__name__}"
            else:
                message = str(exc)
            context.set_trailing_metadata((("server-timing", timer.server_timing()),))
            await context.abort(code, message)
        finally:
            if code == grpc.StatusCode.OK:
                context.set_trailing_metadata((("server-timing", timer.server_timing()),))
            timer.observe()
            RPC_REQUESTS.labels(rpc, code.name).inc()
            RPC_LATENCY.labels(rpc).observe(timer.total())

    async def Search(self, request, context):
        return await self._handle("Search", context, lambda t: search_rpc.search(self.core, request, t))

    async def UpsertProducts(self, request_iterator, context):
        return await self._handle("UpsertProducts", context, lambda t: ingest.upsert_stream(self.core, request_iterator, t))

    async def GetProducts(self, request, context):
        return await self._handle("GetProducts", context, lambda t: products.get_products(self.core, request, t))

    async def DeleteProducts(self, request, context):
        return await self._handle("DeleteProducts", context, lambda t: products.delete_products(self.core, request, t))

    async def Describe(self, request, context):
        return await self._handle("Describe", context, lambda t: describe_rpc.describe(self.core, request, t))

    async def Embed(self, request, context):
        return await self._handle("Embed", context, lambda t: describe_rpc.embed(self.core, request, t))


def _timings(timer: StageTimer) -> pb.Timings:
    s = timer.seconds
    return pb.Timings(
        preprocess_ms=s["preprocess"] * 1000, inference_ms=s["inference"] * 1000, store_ms=s["store"] * 1000, total_ms=timer.total() * 1000
    )
