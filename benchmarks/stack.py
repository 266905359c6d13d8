"""The processes a benchmark runs against: a Milvus Lite store server, gateways, the clip-retrieval peer.

One store server (Milvus Lite over TCP on 127.0.0.1) holds the catalog, so several gateways (one per
variant under test) search the same 100k rows at once and can be alternated without restarts.
The catalog is written straight through gateway.store / gateway.rows (the gateway's own row layout
and schema) with clustered vectors shaped like CLIP embeddings, which is minutes faster than
embedding 100k images on 2 cores; search cost does not depend on where the vectors came from.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.common import progress
from gateway.launcher import free_port

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = Path(os.environ.get("MM_PEER_VENV", "/work/peer-venv"))
PEER_SIDE = Path(__file__).resolve().parent / "peer" / "peer_side.py"
MODEL_CONFIGS = ROOT / "export" / "model_configs"  # this project's own open_clip configs (tiny smoke-test model)


def shipped_fused_weights() -> dict[str, float]:
    """The fused vectors' weights a gateway with default settings expects (gateway/settings.py): a store written
    with them is searched by one fused ANN call, as on a fresh deployment, not by the per-channel fallback."""
    from gateway.fusion import dense_part
    from gateway.settings import Settings

    return dict(dense_part(Settings().weights.as_dict()))


WEIGHTS = shipped_fused_weights()
WEIGHTS_TAG = "w" + "-".join(f"{c[0]}{WEIGHTS.get(c, 0.0):g}" for c in ("image", "title", "caption"))  # in cache file names


def peer_available() -> str | None:
    """None when the peer venv is usable, else why not (the smoke test's skip reason)."""
    python = PEER_VENV / "bin" / "python"
    if not python.is_file():
        return f"no clip-retrieval venv at {PEER_VENV} (create it with benchmarks/peer/setup_venv.sh, or set MM_PEER_VENV)"
    code = "import importlib.util, faiss, flask; assert importlib.util.find_spec('clip_retrieval'), 'clip_retrieval missing'"
    probe = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    if probe.returncode:
        return f"{PEER_VENV} lacks clip-retrieval/faiss: {probe.stderr.strip()[-200:]}"
    return None


def _wait(check, timeout: float, proc: subprocess.Popen, what: str, log: Path) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if check():
                return time.perf_counter() - started
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


class Process:
    """A child process with its log file; stopped by its own pid (gateway.process.stop_process)."""

    def __init__(self, args: Sequence[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> None:
        self.log = log
        self._handle = open(log, "wb")
        self.proc = subprocess.Popen(list(args), stdout=self._handle, stderr=subprocess.STDOUT, env=env, cwd=str(cwd or ROOT))

    def stop(self) -> None:
        from gateway.process import stop_process

        stop_process(self.proc, grace=15)
        self._handle.close()


class StoreServer(Process):
    """`milvus_lite.server.Server` on a TCP port (its one documented way to share a file between processes)."""

    def __init__(self, db_file: Path, log: Path) -> None:
        self.port = free_port()
        code = (
            "import signal, sys, time; from milvus_lite.server import Server\n"
            f"s = Server({str(db_file)!r}, '127.0.0.1:{self.port}')\n"
            "assert s.start(), 'milvus lite did not start'\n"
            "signal.signal(signal.SIGTERM, lambda *_: (s.stop(), sys.exit(0)))  # its milvus child goes too\n"
            "print('started', flush=True)\n"
            "while True: time.sleep(3600)\n"
        )
        super().__init__([sys.executable, "-c", code], log)
        self.uri = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        _wait(up, 60, self.proc, "milvus lite server", log)


def clustered_vectors(n: int, dim: int, centres: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Unit channel vectors around a few hundred centres (CLIP neighbours have cosine ~0.8)."""
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    c = unit(rng.normal(size=(centres, dim)))
    label = rng.integers(0, centres, n)
    noise = 0.75 / np.sqrt(dim)
    image = unit(c[label] + rng.normal(scale=noise, size=(n, dim)))
    return {"image": image, "title": unit(image + rng.normal(scale=noise, size=(n, dim))),
            "caption": unit(image + rng.normal(scale=noise, size=(n, dim)))}


def populate(uri: str, collection: str, n: int, dim: int, batch: int = 1000) -> np.ndarray:
    """n products in the gateway's schema; returns their fused vectors (the peer indexes the same ones)."""
    from gateway import fusion
    from gateway.rows import Channels, build_row
    from gateway.store import MilvusConfig, MilvusStore
    from retrieval.v1 import retrieval_pb2 as pb

    store = MilvusStore(MilvusConfig(uri=uri, collection=collection, dim=dim, timeout_s=120))
    store.connect()
    store.record_fused_weights(WEIGHTS)
    vectors = clustered_vectors(n, dim)
    fused = np.zeros((n, dim), np.float32)
    started = time.perf_counter()
    done = [0]

    def write(start: int) -> None:
        stop = min(n, start + batch)
        part = fusion.fused_vectors({c: v[start:stop] for c, v in vectors.items()}, [fusion.DENSE_CHANNELS] * (stop - start), WEIGHTS)
        fused[start:stop] = part
        rows = []
        for i in range(start, stop):
            product = pb.Product(id=f"p{i}", title=f"product {i}", category=f"cat{i % 20}", brand=f"brand{i % 100}", price=float(i % 500))
            rows.append(build_row(product, Channels({c: v[i] for c, v in vectors.items()}), part[i - start], dim))
        store.upsert(rows)
        done[0] += stop - start
        if (start // batch) % 20 == 0:
            progress(f"store: {done[0]}/{n} rows ({done[0] / (time.perf_counter() - started):.0f} rows/s)")

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two upserts in flight keep the store's two cores busy (ingest does the same)
        list(pool.map(write, range(0, n, batch)))
    store.close()
    return fused


@dataclass
class GatewaySpec:
    label: str
    variant: str = "fp32"
    engine: str = "onnxruntime"
    batch_max_size: int = 32
    batch_max_delay_ms: float = 2.0
    threads: int = 2


class Gateway:
    """`python -m gateway` with the local backend, started by gateway.launcher (free ports, health wait)."""

    def __init__(self, spec: GatewaySpec, repository: Path, store_uri: str, collection: str, workdir: Path, timeout: float = 180) -> None:
        from gateway import launcher

        self.spec = spec
        args = [
            "--collection", collection, "--model-variant", spec.variant, "--engine", spec.engine, "--caption", "false",
            "--batch-max-size", str(spec.batch_max_size), "--batch-max-delay-ms", str(spec.batch_max_delay_ms),
            "--inference-threads", str(spec.threads), "--store-timeout-s", "60",
        ]
        started = time.perf_counter()
        self.process = launcher.start(repository, store_uri, workdir, args, metrics_port=None, timeout=timeout,
                                      log_path=workdir / f"gateway-{spec.label}-{collection}.log")
        self.start_s = time.perf_counter() - started
        self.address, self.metrics_port, self.log = self.process.address, self.process.metrics_port, self.process.log_path

    def stop(self) -> None:
        self.process.stop(grace=15)


class Peer(Process):
    """clip-retrieval's `clip_back` in its own venv (see benchmarks/peer/peer_side.py)."""

    def __init__(self, directory: Path, workdir: Path, arch: str, timeout: float = 240) -> None:
        self.port = free_port()
        started = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        super().__init__([str(PEER_VENV / "bin" / "python"), str(PEER_SIDE), "serve", "--dir", str(directory), "--port", str(self.port),
                          "--arch", arch, "--model-configs", str(MODEL_CONFIGS)],
                         workdir / f"peer-{self.port}.log", env, cwd=workdir)
        self.url = f"http://127.0.0.1:{self.port}/knn-service"
        import urllib.request

        def up() -> bool:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/indices-list", timeout=2).status == 200

        try:
            _wait(up, timeout, self.proc, "clip_back", self.log)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - started


def peer_run(*args: str, timeout: float = 1200) -> dict:
    """Run peer_side.py in the peer venv; returns its last JSON line."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    args = (*args, "--model-configs", str(MODEL_CONFIGS))
    done = subprocess.run([str(PEER_VENV / "bin" / "python"), str(PEER_SIDE), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"peer_side {args[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
