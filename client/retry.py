"""When and how long to wait before trying a call again: UNAVAILABLE only, exponential backoff with jitter.

Why only UNAVAILABLE: it is the one status that says "nothing happened, try later" (the gateway
maps a down store or inference backend to it, and gRPC uses it for a refused connection).
INVALID_ARGUMENT, FAILED_PRECONDITION and the rest will fail the same way again. DEADLINE_EXCEEDED
is not retried either: a call's `timeout` is the budget for all its attempts together, so when it
expires there is no time left to spend on another one.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts; the n-th wait is uniform in [0, min(max_backoff, initial * multiplier**n)] ("full jitter")."""

    max_attempts: int = 4
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    retryable: frozenset = field(default=RETRYABLE)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def should_retry(self, code: grpc.StatusCode | None, attempt: int) -> bool:
        """`attempt` is 1-based: the number of attempts already made."""
        return code in self.retryable and attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts, max_attempts - 1 of them."""
        for attempt in range(1, self.max_attempts):
            yield self.backoff(attempt, rng)


NO_RETRY = RetryPolicy(max_attempts=1)


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status of an RpcError (sync or aio), else None."""
    code = getattr(error, "code", None)
    if callable(code):
        try:
            return code()
        except Exception:  # pragma: no cover - a broken error object
            return None
    return None
