"""The grpc.aio server: retrieval.v1 + grpc.health.v1 + reflection + /metrics, graceful shutdown.

Health follows the dependencies: SERVING while the inference backend and the store answer,
NOT_SERVING otherwise (for "" and "retrieval.v1.Retrieval"); Core's probe flips it back when they
return. SIGTERM/SIGINT stop accepting calls and let running ones finish (grace period).
"""
from __future__ import annotations

import asyncio
import logging
import signal
from typing import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.core import Core
from gateway.metrics import serve_metrics
from gateway.servicer import RetrievalServicer
from gateway.settings import Settings
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

log = logging.getLogger("gateway.server")

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


async def build_server(
    settings: Settings,
    core: Core,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int]:
    """`interceptors` is the seam for cross-cutting concerns (API keys, tracing) added later."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options, interceptors=list(interceptors))
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(core), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    def set_health(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            asyncio.ensure_future(health_servicer.set(name, status))

    core.on_health(set_health)
    set_health(False)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"cannot bind {settings.host}:{settings.port}")
    return server, port


async def serve(settings: Settings) -> None:
    core = Core(settings)
    server, port = await build_server(settings, core)
    serve_metrics(settings.metrics_port, settings.host)
    await server.start()
    # Print the address before the models load, so launchers can connect and watch health.
    print(f"gateway listening on {settings.host}:{port} (metrics :{settings.metrics_port}, backend {settings.backend}, store {settings.store_uri})", flush=True)
    await core.start()
    log.info("dependencies %s", "up" if core.serving else "down (the probe keeps retrying)")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", settings.grace_seconds)
    await server.stop(settings.grace_seconds)
    await core.close()
