"""The gateway with the `triton` backend when Triton goes away: UNAVAILABLE / NOT_SERVING -> Triton back
-> SERVING, without restarting the gateway. Its own server (this test stops it); the RPCs themselves run
against Triton in tests/test_gateway_e2e.py (parametrized over both backends).
"""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)
from tests.gateway_fixtures import pb, png, start_gateway, wait_health

triton_runner = pytest.importorskip("triton_runner")
pytest.importorskip("pytriton")  # the tritonserver binary ships in nvidia-pytriton
pytestmark = pytest.mark.slow

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def triton_setup(gateway_repository, tmp_path_factory):
    from triton_runner import TritonServer
    from triton_runner.render import render_cpu

    work = tmp_path_factory.mktemp("gateway_triton")
    render_cpu(gateway_repository, work / "repository")
    server = TritonServer(work / "repository", workdir=work, startup_timeout=120).start()
    gateway = start_gateway(
        gateway_repository, str(work / "products.db"), work, "--triton-url", server.grpc_url, "--inference-timeout-s", "10",
        backend="triton",
    )
    try:
        yield server, gateway, work
    finally:
        gateway.stop()
        server.stop()


def test_triton_down_gives_unavailable_and_recovers(triton_setup):
    from triton_runner import TritonServer

    server, gateway, work = triton_setup
    products = [pb.Product(id=f"t-{i}", image=png(500 + i), title=f"triton product {i}", category="x") for i in range(3)]
    assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products), timeout=120).ok == 3
    port, repository = server.grpc_port, server.repository
    server.stop()
    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Search(pb.SearchRequest(text="anything"), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "triton" in info.value.details()
    wait_health(gateway.channel, NOT_SERVING, timeout=30)

    restarted = TritonServer(repository, grpc_port=port, workdir=work, startup_timeout=120).start()
    try:
        wait_health(gateway.channel, SERVING, timeout=60)
        assert gateway.stub.Search(pb.SearchRequest(text="triton product", top_k=2)).hits
    finally:
        restarted.stop()
