"""The gateway with the `triton` backend against a real tritonserver (python-backend CPU rendering
of model_repository/ over the tiny export): same mechanics as the local backend, plus Triton down
-> UNAVAILABLE / NOT_SERVING -> Triton back -> SERVING, without restarting the gateway.
"""
from __future__ import annotations

import grpc
import numpy as np
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
        gateway_repository, str(work / "products.db"), work, "--backend", "triton", "--triton-url", server.grpc_url,
        "--inference-timeout-s", "10",
    )
    try:
        yield server, gateway, work
    finally:
        gateway.stop()
        server.stop()


def test_triton_backend_upsert_search_embed_describe(triton_setup, gateway_repository):
    from runtime.clip import ClipEncoder
    from runtime.manifest import Manifest

    _, gateway, _ = triton_setup
    products = [pb.Product(id=f"t-{i}", image=png(500 + i), title=f"triton product {i}", category="x") for i in range(6)]
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products), timeout=120)
    assert response.ok == 6, response
    for product in products[:3]:
        hits = gateway.stub.Search(
            pb.SearchRequest(image=product.image, top_k=3, mode=pb.SEARCH_MODE_MULTI_VECTOR, weights=pb.ChannelWeights(image=1, title=0, caption=0))
        ).hits
        assert hits[0].product.id == product.id

    encoder = ClipEncoder(Manifest.load(gateway_repository))
    embedded = gateway.stub.Embed(pb.EmbedRequest(texts=["red shoes"], images=[png(1)]))
    assert np.allclose(embedded.text_vectors[0].values, encoder.embed_texts(["red shoes"])[0], atol=1e-4)
    assert np.allclose(embedded.image_vectors[0].values, encoder.embed_image_bytes([png(1)])[0], atol=1e-4)
    assert gateway.stub.Describe(pb.DescribeRequest(image=png(2))).tags

    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Search(pb.SearchRequest(image=b"definitely not an image"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_triton_down_gives_unavailable_and_recovers(triton_setup):
    from triton_runner import TritonServer

    server, gateway, work = triton_setup
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
