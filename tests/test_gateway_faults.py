"""Faults with real processes: the gateway SIGKILLed mid-stream, clients vanishing mid-stream, the store
file held by another process, a data directory that cannot be written, Triton killed under load.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from gateway.launcher import NOT_SERVING, SERVING, gateway_env
from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)
from tests.gateway_fixtures import pb, png, start_gateway, wait_health

pytestmark = pytest.mark.slow


def products(prefix: str, n: int, seed: int) -> list[pb.Product]:
    return [pb.Product(id=f"{prefix}-{i:03d}", image=png(seed + i), title=f"{prefix} item {i}") for i in range(n)]


def slow_stream(items, pause: float, sent: list | None = None):
    for product in items:
        yield pb.UpsertProductsRequest(product=product)
        if sent is not None:
            sent.append(product.id)
        time.sleep(pause)


def stored_ids(gateway, ids: list[str]) -> list[str]:
    """Ids found by Search restricted to `ids` (one hit per stored row: a duplicate row would show twice)."""
    hits = gateway.stub.Search(pb.SearchRequest(text="item", top_k=100, filters=pb.Filters(ids=ids)), timeout=30).hits
    return [h.product.id for h in hits]


def test_sigkill_mid_stream_loses_nothing_acknowledged_and_resend_is_idempotent(gateway_repository, tmp_path):
    db = str(tmp_path / "kill.db")
    gateway = start_gateway(gateway_repository, db, tmp_path)
    acked = products("acked", 20, seed=1000)
    assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in acked), timeout=60).ok == 20

    cut = products("cut", 40, seed=2000)
    sent: list[str] = []
    future = gateway.stub.UpsertProducts.future(slow_stream(cut, 0.05, sent), timeout=60)
    while len(sent) < 15:  # the gateway is mid-stream: batches of the stream are being embedded and stored
        time.sleep(0.02)
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        future.result(timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # never acknowledged: the client must resend
    gateway.stop()

    gateway = start_gateway(gateway_repository, db, tmp_path)  # same file: waits for the killed one's lock
    try:
        all_ids = [p.id for p in acked + cut]
        got = gateway.stub.GetProducts(pb.GetProductsRequest(ids=[p.id for p in acked]), timeout=30)
        assert [p.product.id for p in got.products] == [p.id for p in acked] and not got.not_found
        found = stored_ids(gateway, all_ids)
        assert set(p.id for p in acked) <= set(found) and len(found) == len(set(found))  # all acknowledged, no duplicates
        for _ in range(2):  # resending the cut stream (twice) is idempotent
            assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in cut), timeout=120).ok == len(cut)
            found = stored_ids(gateway, all_ids)
            assert sorted(found) == sorted(all_ids)
        hits = gateway.stub.Search(pb.SearchRequest(image=acked[3].image, top_k=1, filters=pb.Filters(ids=all_ids),
                                                    mode=pb.SEARCH_MODE_MULTI_VECTOR, weights=pb.ChannelWeights(image=1, title=0, caption=0)),
                                   timeout=30).hits
        assert hits[0].product.id == acked[3].id  # found by Search too, by its own picture
    finally:
        gateway.stop()


def test_client_disconnect_mid_stream_loses_nothing_acknowledged(gateway_repository, tmp_path):
    gateway = start_gateway(gateway_repository, str(tmp_path / "disconnect.db"), tmp_path)
    try:
        acked = products("kept", 10, seed=3000)
        assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in acked), timeout=60).ok == 10
        for round_ in range(3):
            sent: list[str] = []
            future = gateway.stub.UpsertProducts.future(slow_stream(products(f"gone{round_}", 40, seed=4000 + 50 * round_), 0.05, sent), timeout=60)
            while len(sent) < 10:
                time.sleep(0.02)
            assert future.cancel()  # the client goes away mid-stream
        # A client process killed mid-stream (no clean cancel: the socket just closes)
        script = (
            "import sys, time; sys.path.insert(0, %r)\n"
            "import grpc\nfrom retrieval.v1 import retrieval_pb2 as pb, retrieval_pb2_grpc as g\nfrom tests.gateway_fixtures import png\n"
            "stub = g.RetrievalStub(grpc.insecure_channel(%r))\n"
            "def gen():\n    for i in range(100):\n        yield pb.UpsertProductsRequest(product=pb.Product(id=f'proc-{i}', image=png(i)))\n"
            "        print(i, flush=True); time.sleep(0.05)\n"
            "stub.UpsertProducts(gen(), timeout=60)\n"
        ) % (str(Path(__file__).resolve().parents[1]), gateway.address)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=gateway_env())
        for _ in range(10):
            child.stdout.readline()
        child.kill()
        child.wait(timeout=10)

        wait_health(gateway.channel, SERVING, timeout=30)
        got = gateway.stub.GetProducts(pb.GetProductsRequest(ids=[p.id for p in acked]), timeout=30)
        assert len(got.products) == 10 and not got.not_found
        assert sorted(stored_ids(gateway, [p.id for p in acked])) == sorted(p.id for p in acked)
        assert gateway.stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=products("after", 1, seed=5000)[0])]), timeout=30).ok == 1
        assert gateway.proc.poll() is None
        assert "Traceback" not in gateway.log_path.read_text()
    finally:
        gateway.stop()


def _start_failing(gateway_repository, store_uri: str, workdir: Path) -> tuple[int, str]:
    gateway = start_gateway(gateway_repository, store_uri, workdir, wait=False)
    try:
        code = gateway.proc.wait(timeout=60)
    finally:
        gateway.stop()
    return code, gateway.log_path.read_text()


def _one_clear_error(log: str, words: str) -> None:
    lines = [line for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log, log
    errors = [line for line in lines if line.startswith("gateway: cannot start:")]
    assert len(errors) == 1 and words in errors[0], log


def test_store_file_held_by_another_process_exits_2(gateway_repository, tmp_path):
    from pymilvus import MilvusClient

    db = tmp_path / "held.db"
    holder = MilvusClient(str(db))  # this test process now holds Milvus Lite's lock on the file
    try:
        code, log = _start_failing(gateway_repository, str(db), tmp_path)
        assert code == 2
        _one_clear_error(log, "in use by another process")
        assert Path(f"{tmp_path}/.held.db.lock").exists()  # the holder's lock file was left alone
        holder.list_collections()  # and the holder still works
    finally:
        holder.close()


def _unwritable_directory(tmp_path: Path) -> Path:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError:
        return folder
    for candidate in (Path("/sys"), Path("/proc/self")):  # root ignores modes: use a directory the kernel refuses
        try:
            with tempfile.NamedTemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no unwritable directory available")


def test_readonly_data_directory_exits_2(gateway_repository, tmp_path):
    folder = _unwritable_directory(tmp_path)
    code, log = _start_failing(gateway_repository, str(folder / "products.db"), tmp_path)
    assert code == 2
    _one_clear_error(log, "is not writable")


def test_bad_settings_exit_2(tmp_path):
    for args, words in ((["--tls-cert", str(tmp_path / "missing.pem")], "tls_cert and tls_key"),
                        (["--api-keys", "x read short"], "at least 16 characters")):
        result = subprocess.run([sys.executable, "-m", "gateway", "--store-uri", str(tmp_path / "q.db"), "--port", "0", *args],
                                capture_output=True, text=True, timeout=60, env=gateway_env())
        assert result.returncode == 2
        _one_clear_error(result.stderr, words)


# -- Triton killed under load ------------------------------------------------------------------------
@pytest.fixture
def triton_gateway(gateway_repository, tmp_path):
    pytest.importorskip("pytriton")
    from triton_runner import TritonServer
    from triton_runner.render import render_cpu

    render_cpu(gateway_repository, tmp_path / "repository")
    server = TritonServer(tmp_path / "repository", workdir=tmp_path, startup_timeout=120).start()
    gateway = start_gateway(gateway_repository, str(tmp_path / "products.db"), tmp_path, "--backend", "triton",
                            "--triton-url", server.grpc_url, "--inference-timeout-s", "5")
    servers = [server]
    try:
        yield gateway, servers, tmp_path
    finally:
        gateway.stop()
        for s in servers:
            s.stop()


def test_triton_killed_under_load_fails_fast_and_recovers(triton_gateway):
    from triton_runner import TritonServer

    gateway, servers, work = triton_gateway
    assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products("tri", 4, seed=6000)), timeout=120).ok == 4
    stop = threading.Event()
    outcomes: list[tuple[float, str]] = []  # (seconds, code) of calls that started after the kill

    killed_at: list[float] = []

    def worker(n: int) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                gateway.stub.Search(pb.SearchRequest(text=f"tri item {n}", top_k=2), timeout=20)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            if killed_at and started > killed_at[0]:
                outcomes.append((time.monotonic() - started, code))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker, n) for n in range(8)]
        time.sleep(2.0)
        server = servers[0]
        port, repository = server.grpc_port, server.repository
        server.process.send_signal(signal.SIGKILL)  # no goodbye: the process is gone
        killed_at.append(time.monotonic())
        wait_health(gateway.channel, NOT_SERVING, timeout=30)
        time.sleep(2.0)
        stop.set()
        for f in futures:
            f.result()
    failed = [(s, c) for s, c in outcomes if c != "OK"]
    assert failed, outcomes
    assert {c for _, c in failed} == {"UNAVAILABLE"}, [f for f in failed if f[1] != "UNAVAILABLE"]
    assert max(s for s, _ in failed) < 10.0  # well inside the 20 s deadline: no hang

    restarted = TritonServer(repository, grpc_port=port, workdir=work, startup_timeout=120).start()
    servers.append(restarted)
    wait_health(gateway.channel, SERVING, timeout=60)
    assert gateway.stub.Search(pb.SearchRequest(text="tri item", top_k=2), timeout=30).hits
    assert gateway.proc.poll() is None
