"""Session fixtures for the client tests: a real gateway subprocess (local backend, tiny models,
Milvus Lite in tmp) on a free 127.0.0.1 port, and sample catalogs of product photos.

Import in a test module with `from client_fixtures import *` (tests/ is on sys.path).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.process import stop_process

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gateway:
    address: str
    process: subprocess.Popen
    log: Path


def run_cli(*args: str, address: str | None = None, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m client ARGS --address ADDRESS` as a user runs it; returns the completed process."""
    command = [sys.executable, "-m", "client", *args] + (["--address", address] if address else [])
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=cli_env())
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("MMSEARCH_ADDRESS", "MMSEARCH_API_KEY", "MMSEARCH_TLS_CA"):
        env.pop(key, None)
    return env


def start_gateway(repository: Path, work: Path, port: int | None = None, timeout: float = 120) -> Gateway:
    """`python -m gateway` (local backend, Milvus Lite file in `work`) on 127.0.0.1, once it is SERVING."""
    from client.sync import SearchClient

    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = work / "gateway.log"
    command = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0",
               "--backend", "local", "--model-repository", str(repository), "--store-uri", str(work / "products.db"),
               "--index-type", "FLAT"]
    with log.open("a") as handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=cli_env())
    gateway = Gateway(f"127.0.0.1:{port}", process, log)
    try:
        with SearchClient(gateway.address) as client:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gateway exited {process.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    client.wait_until_serving(timeout=2)
                    return gateway
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gateway not SERVING after {timeout:.0f}s:\n{log.read_text()[-3000:]}") from None
    except BaseException:
        stop_gateway(gateway)
        raise


def stop_gateway(gateway: Gateway) -> None:
    """SIGTERM (graceful: the gateway closes Milvus Lite too), then SIGKILL after 20 s."""
    stop_process(gateway.process)


@pytest.fixture(scope="session")
def client_gateway(tiny_repository, tmp_path_factory):
    """One gateway on the tiny export and a fresh Milvus Lite file for the session; stopped afterwards."""
    gateway = start_gateway(tiny_repository, tmp_path_factory.mktemp("client_gateway"))
    try:
        yield gateway
    finally:
        stop_gateway(gateway)
    assert gateway.process.poll() is not None


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory) -> Path:
    """40 product photos (Fashion-MNIST when installed, else scikit-image photos + drawn products)."""
    from quality.sample_catalog import write_catalog

    catalog, _ = write_catalog(tmp_path_factory.mktemp("sample") / "shop", n=40, size=64, seed=1)
    return catalog
