"""Call metadata of the retrieval.v1 API that gateway and client must agree on (hand-written, not generated)."""
from __future__ import annotations

# The API key travels as `authorization: Bearer <key>` (gRPC metadata keys are lower case).
API_KEY_METADATA = "authorization"
API_KEY_SCHEME = "Bearer"


def api_key_metadata(key: str) -> tuple[str, str]:
    """The metadata pair that carries `key`."""
    return (API_KEY_METADATA, f"{API_KEY_SCHEME} {key}")


def api_key_from(value: str) -> str:
    """The key in an `authorization` value ('' when it is not a bearer token)."""
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == API_KEY_SCHEME.lower() else ""
