"""The client library's transport rules over real gRPC, against a scripted in-process servicer.

The real gateway cannot be told to fail exactly twice, so a small servicer of the same API does:
it counts attempts, fails as scripted, and records metadata. Retries happen on UNAVAILABLE only,
are bounded, respect the deadline, and carry the API key.
"""
from __future__ import annotations

import asyncio
import time
from concurrent import futures

import grpc
import pytest

from client import AsyncSearchClient, GatewayError, RetryPolicy, SearchClient
from client.connection import ConnectionConfig
from retrieval.v1 import retrieval_pb2 as pb
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


class Scripted(pb_grpc.RetrievalServicer):
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail_unavailable = 0
        self.metadata: list[dict[str, str]] = []
        self.streams: list[list[str]] = []

    def _count(self, name: str, context) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        self.metadata.append(dict(context.invocation_metadata()))

    def Search(self, request, context):
        self._count("Search", context)
        if self.fail_unavailable > 0:
            self.fail_unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "store is down")
        return pb.SearchResponse(hits=[pb.Hit(product=pb.ProductRecord(id="p1", title=request.text), score=0.5)])

    def Describe(self, request, context):
        self._count("Describe", context)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image: cannot decode")

    def GetProducts(self, request, context):
        self._count("GetProducts", context)
        time.sleep(1.0)
        return pb.GetProductsResponse()

    def UpsertProducts(self, request_iterator, context):
        self._count("UpsertProducts", context)
        ids = [r.product.id for r in request_iterator]
        self.streams.append(ids)
        results = [pb.UpsertResult(id=i, status=pb.ITEM_STATUS_OK, index=n) for n, i in enumerate(ids)]
        return pb.UpsertProductsResponse(results=results, ok=len(ids))


@pytest.fixture()
def scripted():
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_RetrievalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(0)


def test_retries_unavailable_then_succeeds_and_sends_api_key(scripted):
    servicer, address = scripted
    servicer.fail_unavailable = 2
    with SearchClient(config=ConnectionConfig(address=address, retry=FAST, api_key="s3cret")) as client:
        response = client.search("boots")
    assert response.hits[0].product.title == "boots"
    assert servicer.calls["Search"] == 3
    assert all(m.get("authorization") == "Bearer s3cret" for m in servicer.metadata)


def test_gives_up_after_max_attempts(scripted):
    servicer, address = scripted
    servicer.fail_unavailable = 10
    with SearchClient(config=ConnectionConfig(address=address, retry=FAST)) as client:
        with pytest.raises(GatewayError) as caught:
            client.search("boots")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE and caught.value.attempts == 4
    assert servicer.calls["Search"] == 4


def test_never_retries_invalid_argument_nor_deadline(scripted):
    servicer, address = scripted
    with SearchClient(config=ConnectionConfig(address=address, retry=FAST)) as client:
        with pytest.raises(GatewayError) as caught:
            client.describe(b"not an image")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and "cannot decode" in caught.value.details
        with pytest.raises(GatewayError) as late:
            client.get(["x"], timeout=0.2)
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert servicer.calls["Describe"] == 1 and servicer.calls["GetProducts"] == 1


def test_upsert_helper_batches_one_stream_per_batch(scripted):
    servicer, address = scripted
    products = (pb.Product(id=f"p{i}", image=b"x") for i in range(7))
    with SearchClient(config=ConnectionConfig(address=address, retry=FAST)) as client:
        results = list(client.upsert(products, batch_size=3))
    assert [len(batch) for batch, _ in results] == [3, 3, 1]
    assert servicer.streams == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]
    assert sum(r.ok for _, r in results) == 7


def test_async_client_retries_and_streams(scripted):
    servicer, address = scripted
    servicer.fail_unavailable = 1

    async def run():
        async with AsyncSearchClient(config=ConnectionConfig(address=address, retry=FAST)) as client:
            found = await asyncio.gather(*(client.search(f"q{i}") for i in range(8)))
            batches = [r async for r in client.upsert((pb.Product(id=f"a{i}", image=b"x") for i in range(5)), batch_size=2)]
            with pytest.raises(GatewayError):
                await client.describe(b"x")
            return found, batches

    found, batches = asyncio.run(run())
    assert [f.hits[0].product.title for f in found] == [f"q{i}" for i in range(8)]
    assert servicer.calls["Search"] == 9 and len(batches) == 3 and servicer.calls["Describe"] == 1


def test_unreachable_gateway_is_unavailable():
    with SearchClient(config=ConnectionConfig(address="127.0.0.1:1", retry=FAST, timeout=2)) as client:
        with pytest.raises(GatewayError) as caught:
            client.search("x")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.fixture()
def tls_server(tmp_path):
    """The scripted servicer behind TLS with a self-signed certificate for localhost (openssl CLI)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    servicer = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_RetrievalServicer_to_server(servicer, server)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield servicer, f"localhost:{port}", cert
    server.stop(0)


def test_tls_with_root_certificate_and_api_key(tls_server):
    servicer, address, cert = tls_server
    config = ConnectionConfig(address=address, tls=True, root_certificates=cert, api_key="k1", retry=FAST)
    with SearchClient(config=config) as client:
        assert client.search("over tls").hits[0].product.title == "over tls"
    assert servicer.metadata[-1]["authorization"] == "Bearer k1"
    with SearchClient(config=ConnectionConfig(address=address, retry=FAST, timeout=3)) as plain:
        with pytest.raises(GatewayError) as caught:
            plain.search("plaintext to a TLS port")
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
