"""One exception type for every failed call, carrying the gRPC status the gateway chose."""
from __future__ import annotations

import grpc

from client.retry import status_code


class GatewayError(Exception):
    """A call failed: `code` is the gRPC status (INVALID_ARGUMENT: fix the request; UNAVAILABLE: retry later)."""

    def __init__(self, code: grpc.StatusCode | None, details: str, attempts: int = 1) -> None:
        self.code = code
        self.details = details
        self.attempts = attempts
        name = code.name if code is not None else "UNKNOWN"
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{name}: {details}{suffix}")

    @classmethod
    def from_rpc(cls, error: BaseException, attempts: int = 1) -> "GatewayError":
        details = error.details() if callable(getattr(error, "details", None)) else str(error)
        return cls(status_code(error), details or "", attempts)
