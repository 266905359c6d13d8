"""API keys: scoped keys (read, write, admin), several at once, checked by a grpc.aio server interceptor.

A key file (settings `api_keys_file`, or `api_keys` inline with entries separated by ';') holds one
key per line: `name scopes key`, e.g. `indexer write,read s3cr3t`. The key may be written as
`sha256:<hex digest>` so the file needs no plaintext. Only the SHA-256 digests are kept in memory,
compared with `hmac.compare_digest` against every configured key (no early exit), and only the
key's name is ever logged. Several keys with the same scopes make rotation a two-step change:
add the new key, move clients, remove the old one (docs/security.md).

With no key configured the gateway is open (a development default, logged as a warning). With
keys: writes need `write`, reads need `read` when `require_read_key` is set (else open),
reflection needs `admin`; `admin` implies `write` and `write` implies `read`. Health stays open
for probes. A missing or unknown key is UNAUTHENTICATED, a key without the scope PERMISSION_DENIED.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import grpc

from gateway.settings import Settings
from retrieval.v1 import retrieval_pb2
from retrieval.v1.metadata import API_KEY_METADATA, api_key_from

log = logging.getLogger("gateway.auth")

SCOPES = ("read", "write", "admin")
_IMPLIES = {"admin": {"admin", "write", "read"}, "write": {"write", "read"}, "read": {"read"}}

_SERVICE = "/" + retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name + "/"
# The scope each method needs; methods of services not listed here need `admin` (deny by default).
RPC_SCOPES = {
    _SERVICE + "Search": "read",
    _SERVICE + "GetProducts": "read",
    _SERVICE + "Describe": "read",
    _SERVICE + "Embed": "read",
    _SERVICE + "UpsertProducts": "write",
    _SERVICE + "DeleteProducts": "write",
}
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class KeyFileError(ValueError):
    """The key file or MM_API_KEYS is malformed; the message names the line, never the key."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    digest: bytes  # SHA-256 of the key

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(text: str, source: str, separator: str = "\n") -> list[ApiKey]:
    """Entries `name scopes key` (a line starting with '#' is a comment); raises KeyFileError naming the entry."""
    keys: list[ApiKey] = []
    for number, raw in enumerate(text.split(separator), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise KeyFileError(f"{source} entry {number}: expected 'name scopes key' (3 fields), got {len(parts)}")
        name, scopes_text, secret = parts
        scopes = {s.strip() for s in scopes_text.split(",") if s.strip()}
        unknown = scopes - set(SCOPES)
        if not scopes or unknown:
            raise KeyFileError(f"{source} entry {number} ({name}): scopes must be from {', '.join(SCOPES)}, got {scopes_text!r}")
        granted = frozenset().union(*(_IMPLIES[s] for s in scopes))
        if secret.startswith("sha256:"):
            try:
                value = bytes.fromhex(secret[len("sha256:"):])
            except ValueError:
                value = b""
            if len(value) != 32:
                raise KeyFileError(f"{source} entry {number} ({name}): sha256: needs 64 hex digits")
        else:
            if len(secret) < 16:
                raise KeyFileError(f"{source} entry {number} ({name}): a key needs at least 16 characters")
            value = digest(secret)
        if any(k.name == name for k in keys):
            raise KeyFileError(f"{source} entry {number}: key name {name!r} is used twice")
        keys.append(ApiKey(name, granted, value))
    return keys


class KeyRing:
    """The configured keys (digests only)."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = list(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        keys: list[ApiKey] = []
        if settings.api_keys_file is not None:
            path = Path(settings.api_keys_file)
            try:
                text = path.read_text()
            except OSError as exc:
                raise KeyFileError(f"cannot read api_keys_file {path}: {exc.strerror}") from None
            keys += parse_keys(text, str(path))
        inline = settings.api_keys.get_secret_value()  # a SecretStr: repr() and logs show '**********'
        if inline:
            keys += parse_keys(inline, "api_keys (MM_API_KEYS)", separator=";")
        names = [k.name for k in keys]
        if len(names) != len(set(names)):
            raise KeyFileError("a key name is used both in api_keys_file and in MM_API_KEYS")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key whose digest equals the presented key's; every key is compared (constant time)."""
        wanted = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest):
                found = key
        return found


def presented_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for name, value in metadata or ():
        if name == API_KEY_METADATA and isinstance(value, str):
            return api_key_from(value)
    return ""


def required_scope(method: str, require_read_key: bool) -> str | None:
    """The scope `method` needs, or None when it is open."""
    if method.startswith(OPEN_PREFIXES):
        return None
    scope = RPC_SCOPES.get(method, "admin")
    if scope == "read" and not require_read_key:
        return None
    return scope


def rejecting_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that fails every call with `code`."""

    async def unary(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(code, message)

    async def streaming(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's key against the scope of the method (see the module docstring)."""

    def __init__(self, ring: KeyRing, require_read_key: bool = False) -> None:
        self.ring = ring
        self.require_read_key = require_read_key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self.ring:
            return handler
        method = details.method
        scope = required_scope(method, self.require_read_key)
        if scope is None:
            return handler
        key = presented_key(details.invocation_metadata)
        if not key:
            log.info("refused %s: no API key", method)
            return rejecting_handler(
                handler, grpc.StatusCode.UNAUTHENTICATED, f"{method} needs an API key with scope '{scope}' ({API_KEY_METADATA}: Bearer <key>)"
            )
        found = self.ring.lookup(key)
        if found is None:
            log.info("refused %s: unknown API key", method)
            return rejecting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "the API key is not valid")
        if not found.allows(scope):
            log.info("refused %s: key %s lacks scope %s", method, found.name, scope)
            return rejecting_handler(
                handler, grpc.StatusCode.PERMISSION_DENIED, f"API key '{found.name}' lacks scope '{scope}' needed by {method}"
            )
        return handler
