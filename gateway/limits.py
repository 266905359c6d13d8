"""Per-call limits as a grpc.aio interceptor: a deadline cap per call, a token-bucket rate limit per key,
and undecodable messages refused as INVALID_ARGUMENT.

The cap bounds how long a call may hold the gateway whatever deadline the client asked for
(`max_deadline_s` for unary calls, `max_stream_s` for UpsertProducts streams): past it the call
ends with DEADLINE_EXCEEDED. The rate limit (`rate_limit_rps`, bucket `rate_limit_burst`) counts
calls per API key name, or per client address for calls without a valid key, and answers
RESOURCE_EXHAUSTED. A cancellation leaking out of a dependency (not of the call itself) is answered
UNAVAILABLE instead of leaving the client waiting for its deadline. Health checks are never limited. A message that does not parse (e.g. invalid
UTF-8 in a string field) would otherwise fail inside grpc as UNKNOWN; here it is INVALID_ARGUMENT. The number of calls in progress is capped by
grpc itself (`maximum_concurrent_rpcs`, see gateway/server.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import AsyncIterator, Awaitable, Callable

import grpc

from gateway.auth import OPEN_PREFIXES, KeyRing, presented_key
from gateway.errors import InvalidInput

log = logging.getLogger("gateway.limits")

MAX_BUCKETS = 10_000  # identities remembered; the least recently seen are forgotten first


class TokenBucket:
    """`rate` tokens per second up to `burst`; one call takes one token."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, float(burst), float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, identity: str) -> bool:
        now = self.clock()
        bucket = self.buckets.get(identity)
        if bucket is None:
            bucket = self.buckets[identity] = TokenBucket(self.rate, self.burst, now)
            if len(self.buckets) > MAX_BUCKETS:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(identity)
        return bucket.take(now)


class Undecodable:
    """Stands in for a request message that did not parse."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    """`deserializer` that returns Undecodable instead of raising (grpc would answer UNKNOWN)."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or anything a bad message provokes
            return Undecodable(exc)

    return parse


def _not_a_message(what: str, error: Exception) -> str:
    return f"{what} is not a valid protobuf message of this method (strings must be UTF-8): {error}"


async def checked_stream(requests: AsyncIterator[object]) -> AsyncIterator[object]:
    index = 0
    async for request in requests:
        if isinstance(request, Undecodable):
            raise InvalidInput(_not_a_message(f"stream item {index}", request.error))
        yield request
        index += 1


def _peer_host(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or "unknown"  # ipv4:127.0.0.1:5555 / ipv6:[::1]:5555
    return peer.rsplit(":", 1)[0]


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, ring: KeyRing, max_deadline_s: float, max_stream_s: float, limiter: RateLimiter | None) -> None:
        self.ring = ring
        self.max_deadline_s = max_deadline_s
        self.max_stream_s = max_stream_s
        self.limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES) or handler.response_streaming:
            return handler  # health, and server-streaming services (reflection) are left as they are
        key = presented_key(details.invocation_metadata)
        found = self.ring.lookup(key) if key and self.ring else None
        key_identity = f"key:{found.name}" if found else None
        streaming = handler.request_streaming
        cap = self.max_stream_s if streaming else self.max_deadline_s
        inner = handler.stream_unary if streaming else handler.unary_unary
        method, limiter = details.method, self.limiter

        async def behavior(request_or_iterator, context: grpc.aio.ServicerContext):
            if streaming:
                request_or_iterator = checked_stream(request_or_iterator)
            elif isinstance(request_or_iterator, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _not_a_message("the request", request_or_iterator.error))
            if limiter is not None:
                identity = key_identity or f"peer:{_peer_host(context)}"
                if not limiter.allow(identity):
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"rate limit exceeded: {limiter.rate:g} calls/s (burst {limiter.burst}) per {identity.split(':')[0]}; retry later",
                    )
            try:
                async with asyncio.timeout(cap):
                    return await inner(request_or_iterator, context)
            except TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} ran past the gateway's cap of {cap:g}s per call")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the call itself was cancelled (client gone, server stopping)
                # A cancellation leaking out of a dependency (e.g. its channel closed under the call) would leave
                # the call unanswered until the client's deadline: answer it now.
                log.warning("%s: a dependency call was cancelled under it; answering UNAVAILABLE", method)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{method}: a dependency call was cancelled (it is restarting?); retry")

        kwargs = dict(request_deserializer=tolerant(handler.request_deserializer), response_serializer=handler.response_serializer)
        if streaming:
            return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
        return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)
