"""How the client reaches a gateway: address, TLS, API key, channel options (shared by sync and aio)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import grpc

from client.retry import RetryPolicy
from retrieval.v1.metadata import api_key_metadata

DEFAULT_ADDRESS = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # the gateway's default max_message_bytes


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything needed to open a channel and call it; defaults come from MMSEARCH_* variables."""

    address: str = DEFAULT_ADDRESS
    api_key: str | None = None
    tls: bool = False
    root_certificates: Path | None = None  # PEM; None = system roots (with tls)
    client_certificate: Path | None = None  # PEM chain for mutual TLS
    client_key: Path | None = None
    server_name: str | None = None  # TLS name override (a certificate issued for another host name)
    timeout: float | None = 30.0  # seconds per call, all retries included; None = no deadline
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_message_bytes: int = MAX_MESSAGE_BYTES
    keepalive_ms: int = 30_000
    compression: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> "ConnectionConfig":
        """MMSEARCH_ADDRESS, MMSEARCH_API_KEY, MMSEARCH_TLS_CA (implies TLS); keyword overrides win when not None."""
        env: dict[str, Any] = {}
        if os.environ.get("MMSEARCH_ADDRESS"):
            env["address"] = os.environ["MMSEARCH_ADDRESS"]
        if os.environ.get("MMSEARCH_API_KEY"):
            env["api_key"] = os.environ["MMSEARCH_API_KEY"]
        if os.environ.get("MMSEARCH_TLS_CA"):
            env["tls"] = True
            env["root_certificates"] = Path(os.environ["MMSEARCH_TLS_CA"])
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)

    def channel_options(self, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", self.keepalive_ms),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            # Retries are ours (client/retry.py): one policy for unary and streamed calls.
            ("grpc.enable_retries", 0),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        options.extend(extra)
        return options

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.root_certificates),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_certificate),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the API key as a bearer token (gateway/auth.py reads it)."""
        return (api_key_metadata(self.api_key),) if self.api_key else ()

    def compression_arg(self) -> grpc.Compression | None:
        return grpc.Compression.Gzip if self.compression else None


def open_channel(config: ConnectionConfig, extra_options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    credentials = config.credentials()
    options = config.channel_options(extra_options)
    if credentials is None:
        return grpc.insecure_channel(config.address, options=options)
    return grpc.secure_channel(config.address, credentials, options=options)


def open_aio_channel(config: ConnectionConfig, extra_options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    credentials = config.credentials()
    options = config.channel_options(extra_options)
    if credentials is None:
        return grpc.aio.insecure_channel(config.address, options=options)
    return grpc.aio.secure_channel(config.address, credentials, options=options)
