"""Error kinds of the gateway and the gRPC status each maps to (one place, so every RPC agrees)."""
from __future__ import annotations

import grpc

from gateway.fusion import FusionError
from preprocessing.clip_tokenizer import TextInputError
from preprocessing.image import ImageDecodeError


class InvalidInput(ValueError):
    """The request is wrong; the message says what to change (INVALID_ARGUMENT)."""


class Unavailable(RuntimeError):
    """A dependency (inference backend or store) cannot be reached now; retry later (UNAVAILABLE)."""


class LimitExceeded(RuntimeError):
    """The request goes past a limit of the gateway, e.g. items per upsert stream (RESOURCE_EXHAUSTED)."""


class NotSupported(RuntimeError):
    """The deployment lacks a model the request needs, e.g. ITM for rerank (FAILED_PRECONDITION)."""


INVALID_INPUT_ERRORS = (InvalidInput, ImageDecodeError, TextInputError, FusionError)


def status_of(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, INVALID_INPUT_ERRORS):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, Unavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, LimitExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, NotSupported):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL
