"""Session fixtures for the client tests: a real gateway subprocess (local backend, tiny models,
Milvus Lite in tmp) on a free 127.0.0.1 port, and sample catalogs of product photos.

Import in a test module with `from client_fixtures import *` (tests/ is on sys.path).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import launcher
from gateway.launcher import GatewayProcess, free_port  # noqa: F401 (free_port: re-exported for the tests)

ROOT = Path(__file__).resolve().parents[1]


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


def start_gateway(repository: Path, work: Path, port: int | None = None, timeout: float = 120) -> GatewayProcess:
    """`python -m gateway` (local backend, FLAT index, Milvus Lite file in `work`) on 127.0.0.1, once it is SERVING."""
    return launcher.start(repository, str(work / "products.db"), work, ["--index-type", "FLAT"], port=port,
                          log_path=work / "gateway.log", timeout=timeout)


def stop_gateway(gateway: GatewayProcess) -> None:
    """SIGTERM (graceful: the gateway closes Milvus Lite too), then SIGKILL after 20 s."""
    gateway.stop()


@pytest.fixture(scope="session")
def client_gateway(tiny_repository, tmp_path_factory):
    """One gateway on the tiny export and a fresh Milvus Lite file for the session; stopped afterwards."""
    gateway = start_gateway(tiny_repository, tmp_path_factory.mktemp("client_gateway"))
    try:
        yield gateway
    finally:
        stop_gateway(gateway)
    assert gateway.proc.poll() is not None


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory) -> Path:
    """40 product photos (Fashion-MNIST when installed, else scikit-image photos + drawn products)."""
    from quality.sample_catalog import write_catalog

    catalog, _ = write_catalog(tmp_path_factory.mktemp("sample") / "shop", n=40, size=64, seed=1)
    return catalog
