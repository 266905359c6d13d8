"""Starting a `python -m gateway` subprocess the one way: free port, flags, log file, wait for health, stop.

Used by scripts/demo.py, quality/eval.py, benchmarks/ and the test fixtures. The gateway binds
127.0.0.1 unless told otherwise. TLS and API keys are plain options (`tls_cert`, `tls_key`,
`tls_client_ca`, `api_keys_file`); `credentials` are the channel credentials the launcher uses
to watch health over TLS (health itself needs no key).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.process import stop_process

ROOT = Path(__file__).resolve().parents[1]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def open_channel(address: str, credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None) -> grpc.Channel:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 2.0) -> int:
    """The health status of `service`, or -1 when the gateway does not answer."""
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
    except grpc.RpcError:
        return -1


def wait_health(channel: grpc.Channel, want: int = SERVING, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll health until it is `want`; RuntimeError when `proc` exits first, TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(channel) == want:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"health did not become {health_pb2.HealthCheckResponse.ServingStatus.Name(want)} within {timeout:.0f}s")


@dataclass
class GatewayProcess:
    proc: subprocess.Popen
    address: str
    port: int
    metrics_port: int
    store_uri: str
    log_path: Path
    credentials: grpc.ChannelCredentials | None = None
    server_name: str | None = None
    _channels: list[grpc.Channel] = field(default_factory=list, repr=False)

    def open_channel(self) -> grpc.Channel:
        """A new channel to the gateway (closed by stop())."""
        channel = open_channel(self.address, self.credentials, self.server_name)
        self._channels.append(channel)
        return channel

    def wait_serving(self, timeout: float = 120.0) -> None:
        with open_channel(self.address, self.credentials, self.server_name) as channel:
            wait_health(channel, SERVING, timeout=timeout, proc=self.proc)

    def log(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (the gateway drains calls and closes Milvus Lite), SIGKILL after `grace` s."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        stop_process(self.proc, grace=grace)


def gateway_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a gateway subprocess: this checkout first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.update(extra or {})
    return env


def start(
    repository: Path | str,
    store_uri: str,
    workdir: Path,
    args: Sequence[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    metrics_port: int | None = 0,
    backend: str = "local",
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    api_keys_file: Path | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    new_session: bool = False,
    wait: bool = True,
    timeout: float = 120.0,
) -> GatewayProcess:
    """Start `python -m gateway` and (with `wait`) return once health is SERVING.

    `metrics_port` None picks a free port, 0 turns /metrics off. `args` are more gateway flags.
    On a failed start the process is stopped and RuntimeError carries the log's tail.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    metrics_port = free_port(host) if metrics_port is None else metrics_port
    log_path = log_path or workdir / f"gateway-{port}.log"
    command = [
        sys.executable, "-m", "gateway", "--host", host, "--port", str(port), "--metrics-port", str(metrics_port),
        "--backend", backend, "--model-repository", str(repository), "--store-uri", store_uri,
    ]
    for flag, value in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--tls-client-ca", tls_client_ca), ("--api-keys-file", api_keys_file)):
        if value is not None:
            command += [flag, str(value)]
    command += list(args)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command, cwd=str(cwd or ROOT), env=gateway_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session
        )
    gateway = GatewayProcess(proc, f"{host}:{port}", port, metrics_port, store_uri, log_path, credentials, server_name)
    if wait:
        try:
            gateway.wait_serving(timeout)
        except Exception as exc:
            gateway.stop(grace=10)
            raise RuntimeError(f"gateway did not become SERVING ({exc}):\n{gateway.log()}") from None
    return gateway
