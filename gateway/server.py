"""The grpc.aio server: retrieval.v1 + grpc.health.v1 (+ reflection if enabled) + /metrics, graceful shutdown.

Security (docs/security.md): API keys (gateway/auth.py) and per-call limits (gateway/limits.py)
run as interceptors before any handler; TLS, optionally mutual, when `tls_cert`/`tls_key` are
set; at most `max_concurrent_rpcs` calls in progress (more get RESOURCE_EXHAUSTED from grpc).

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

from gateway.auth import AuthInterceptor, KeyRing
from gateway.core import Core
from gateway.limits import LimitsInterceptor, RateLimiter
from gateway.preflight import StartupError
from gateway.metrics import serve_metrics
from gateway.servicer import RetrievalServicer
from gateway.settings import Settings
from retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

log = logging.getLogger("gateway.server")

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


def security_interceptors(settings: Settings, ring: KeyRing) -> list[grpc.aio.ServerInterceptor]:
    """API keys first (an unauthenticated call costs nothing more), then deadline caps and the rate limit."""
    limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst) if settings.rate_limit_rps > 0 else None
    return [
        AuthInterceptor(ring, settings.require_read_key),
        LimitsInterceptor(ring, settings.max_deadline_s, settings.max_stream_s, limiter),
    ]


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files of the settings (None: plaintext)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def build_server(
    settings: Settings,
    core: Core,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ring: KeyRing | None = None,
) -> tuple[grpc.aio.Server, int]:
    """`interceptors` run after the security ones (API keys, limits); e.g. tracing."""
    ring = ring if ring is not None else KeyRing.from_settings(settings)
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(
        options=options,
        interceptors=[*security_interceptors(settings, ring), *interceptors],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
    )
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(RetrievalServicer(core), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    def set_health(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            asyncio.ensure_future(health_servicer.set(name, status))

    core.on_health(set_health)
    set_health(False)
    if settings.reflection:
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise StartupError(f"cannot listen on {address} (in use, or not an address of this host)")
    if not ring:
        log.warning("no API keys configured: every call is allowed (set api_keys_file for production)")
    else:
        log.info("API keys: %d configured (%s); reads %s", len(ring.keys), ", ".join(k.name for k in ring.keys),
                 "need a read key" if settings.require_read_key else "are open")
    return server, port


async def serve(settings: Settings, ring: KeyRing | None = None) -> None:
    core = Core(settings)
    server, port = await build_server(settings, core, ring=ring)
    serve_metrics(settings.metrics_port, settings.host)
    await server.start()
    # Print the address before the models load, so launchers can connect and watch health.
    scheme = "tls" if settings.tls_cert else "plaintext"
    print(f"gateway listening on {settings.host}:{port} ({scheme}, metrics :{settings.metrics_port}, backend {settings.backend}, store {settings.store_uri})", flush=True)
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
