"""Dependency failure and durability, with real processes.

- The store goes down (Milvus Lite in TCP server mode, stopped): RPCs get UNAVAILABLE, health
  goes NOT_SERVING; the store comes back: health returns to SERVING and search works, without
  restarting the gateway.
- An acknowledged upsert survives SIGKILL of the gateway (and so of its embedded Milvus Lite).
"""
from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)
from tests.gateway_fixtures import free_port, pb, png, start_gateway, wait_health

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def start_milvus_server(db_path, port):
    from milvus_lite.server import Server

    server = Server(str(db_path), f"127.0.0.1:{port}")
    assert server.init() and server.start()
    return server


@pytest.mark.slow
def test_store_down_gives_unavailable_and_gateway_recovers(gateway_repository, tmp_path):
    port = free_port()
    server = start_milvus_server(tmp_path / "remote.db", port)
    gateway = start_gateway(gateway_repository, f"http://127.0.0.1:{port}", tmp_path)
    try:
        product = pb.Product(id="r-1", image=png(1), title="survivor")
        assert gateway.stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=product)])).ok == 1
        assert gateway.stub.Search(pb.SearchRequest(text="survivor", top_k=1)).hits[0].product.id == "r-1"

        server.stop()
        with pytest.raises(grpc.RpcError) as info:
            gateway.stub.Search(pb.SearchRequest(text="survivor", top_k=1), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "store" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            gateway.stub.GetProducts(pb.GetProductsRequest(ids=["r-1"]), timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        wait_health(gateway.channel, NOT_SERVING, timeout=30)

        server = start_milvus_server(tmp_path / "remote.db", port)
        wait_health(gateway.channel, SERVING, timeout=60)
        assert gateway.stub.Search(pb.SearchRequest(text="survivor", top_k=1)).hits[0].product.id == "r-1"
        assert gateway.proc.poll() is None  # same process throughout
    finally:
        gateway.stop()
        server.stop()


@pytest.mark.slow
def test_acknowledged_upsert_survives_sigkill(gateway_repository, tmp_path):
    from pymilvus import MilvusClient

    db = tmp_path / "durable.db"
    gateway = start_gateway(gateway_repository, str(db), tmp_path)
    products = [pb.Product(id=f"d-{i}", image=png(300 + i), title=f"durable {i}") for i in range(3)]
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products))
    assert response.ok == 3
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(timeout=10)
    gateway.channel.close()

    deadline = time.monotonic() + 30
    while True:  # the embedded Milvus child exits once the killed gateway's file lock is gone
        try:
            client = MilvusClient(str(db))
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        client.load_collection("products")
        rows = client.query("products", filter='id in ["d-0", "d-1", "d-2"]', output_fields=["id", "title"])
        assert sorted(r["id"] for r in rows) == ["d-0", "d-1", "d-2"]
    finally:
        client.close()
