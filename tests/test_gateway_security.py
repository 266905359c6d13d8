"""API keys, TLS / mutual TLS and limits, against real gateways on 127.0.0.1 (tiny export, Milvus Lite in tmp).

Two gateways for the module:
- `secured`: TLS, API keys (read, write, admin, and two write keys for rotation), reads keyed,
  reflection on, a rate limit per key.
- `mutual`: mutual TLS, API keys with reads open, at most 3 concurrent calls, 5 items per upsert
  stream, streams capped at 3 s.
The project's own client (client/) makes the calls, with and without the right CA.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.errors import GatewayError
from client.sync import SearchClient
from gateway.auth import KeyFileError, parse_keys
from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)
from tests.gateway_fixtures import pb, png, start_gateway
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from tests.pki import Authority

pytestmark = pytest.mark.slow

KEYS = {
    "reader": ("read", "r" * 8 + "-reader-key-0001"),
    "writer": ("write", "w" * 8 + "-writer-key-0001"),
    "writer-next": ("write", "n" * 8 + "-writer-key-0002"),  # rotation: both writer keys valid at once
    "admin": ("admin", "a" * 8 + "-admin-key-00001"),
    "burner": ("read", "b" * 8 + "-burner-key-0001"),
}


def key(name: str) -> str:
    return KEYS[name][1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder / "ca")
    other = Authority(folder / "other", name="someone else's CA")
    return {"ca": ca, "other": other, "server": ca.issue("server", server=True), "client": ca.issue("client", server=False),
            "stranger": other.issue("stranger", server=False)}


def keys_file(folder: Path) -> Path:
    path = folder / "api-keys"
    lines = ["# name scopes key"]
    for name, (scope, secret) in KEYS.items():
        # the admin key is stored as its digest: the file needs no plaintext
        value = "sha256:" + hashlib.sha256(secret.encode()).hexdigest() if name == "admin" else secret
        lines.append(f"{name} {scope} {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def secured(gateway_repository, pki, tmp_path_factory):
    work = tmp_path_factory.mktemp("secured")
    gateway = start_gateway(
        gateway_repository, str(work / "products.db"), work,
        "--require-read-key", "true", "--reflection", "true", "--rate-limit-rps", "2", "--rate-limit-burst", "20",
        tls_cert=pki["server"].cert, tls_key=pki["server"].key, api_keys_file=keys_file(work),
        credentials=grpc.ssl_channel_credentials(pki["ca"].cert_path.read_bytes()),
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def mutual(gateway_repository, pki, tmp_path_factory):
    work = tmp_path_factory.mktemp("mutual")
    client_cert = pki["client"]
    gateway = start_gateway(
        gateway_repository, str(work / "products.db"), work,
        "--max-concurrent-rpcs", "3", "--max-upsert-items", "5", "--max-stream-s", "3",
        tls_cert=pki["server"].cert, tls_key=pki["server"].key, tls_client_ca=pki["ca"].cert_path, api_keys_file=keys_file(work),
        credentials=grpc.ssl_channel_credentials(
            pki["ca"].cert_path.read_bytes(), client_cert.key.read_bytes(), client_cert.cert.read_bytes()
        ),
    )
    yield gateway
    gateway.stop()


def client(gateway, pki, api_key: str | None = None, ca: str = "ca", client_cert: str | None = None, **options) -> SearchClient:
    issued = pki[client_cert] if client_cert else None
    return SearchClient(
        gateway.address, tls=True, root_certificates=pki[ca].cert_path, api_key=api_key,
        client_certificate=issued.cert if issued else None, client_key=issued.key if issued else None,
        timeout=options.pop("timeout", 30), **options,
    )


def products(prefix: str, n: int, seed: int = 0) -> list[pb.Product]:
    return [pb.Product(id=f"{prefix}-{i}", image=png(seed + i), title=f"{prefix} product {i}") for i in range(n)]


# -- API keys -----------------------------------------------------------------------------------
def test_writes_need_a_write_key(secured, pki):
    with client(secured, pki) as anonymous:
        with pytest.raises(GatewayError) as info:
            anonymous.upsert_batch(products("anon", 1))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED and "API key" in info.value.details
    with client(secured, pki, api_key="not-a-configured-key-at-all") as wrong:
        with pytest.raises(GatewayError) as info:
            wrong.delete(["x"])
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    with client(secured, pki, api_key=key("reader")) as reader:
        with pytest.raises(GatewayError) as info:
            reader.upsert_batch(products("reader", 1))
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "'reader' lacks scope 'write'" in info.value.details
        with pytest.raises(GatewayError) as info:
            reader.delete(["x"])
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    with client(secured, pki, api_key=key("writer")) as writer:
        assert writer.upsert_batch(products("w", 2)).ok == 2
        assert writer.search("w product", top_k=2).hits  # write implies read


def test_rotation_two_write_keys_at_once(secured, pki):
    for name in ("writer", "writer-next"):
        with client(secured, pki, api_key=key(name)) as writer:
            assert writer.upsert_batch(products(name, 1, seed=40)).ok == 1
            assert writer.delete([f"{name}-0"]).deleted == 1


def test_reads_keyed_when_required(secured, pki):
    with client(secured, pki) as anonymous:
        with pytest.raises(GatewayError) as info:
            anonymous.search("anything")
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.health() == "SERVING"  # health stays open for probes
    with client(secured, pki, api_key=key("reader")) as reader:
        assert reader.get(["missing"]).not_found == ["missing"]
        assert reader.embed(texts=["red shoes"]).dim > 0


def test_reflection_enabled_needs_admin(secured, pki):
    credentials = grpc.ssl_channel_credentials(pki["ca"].cert_path.read_bytes())
    request = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with grpc.secure_channel(secured.address, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter(request), metadata=[("authorization", f"Bearer {key('writer')}")]))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        responses = list(stub.ServerReflectionInfo(iter(request), metadata=[("authorization", f"Bearer {key('admin')}")]))
        names = {s.name for s in responses[0].list_services_response.service}
        assert {"retrieval.v1.Retrieval", "grpc.health.v1.Health"} <= names


def test_rate_limit_per_key(secured, pki):
    codes = []
    with client(secured, pki, api_key=key("burner")) as burner:
        for _ in range(40):
            try:
                burner.get(["none"])
                codes.append("OK")
            except GatewayError as error:
                codes.append(error.code.name)
                assert error.code != grpc.StatusCode.RESOURCE_EXHAUSTED or "rate limit" in error.details
    assert codes.count("OK") >= 20 and "RESOURCE_EXHAUSTED" in codes  # burst 20, then 2/s
    with client(secured, pki, api_key=key("reader")) as other:  # another key has its own bucket
        assert other.get(["none"]).not_found == ["none"]


def test_keys_never_logged(secured, pki):
    with client(secured, pki, api_key="wrong-key-that-must-not-appear-in-logs") as wrong:
        with pytest.raises(GatewayError):
            wrong.search("x")
    log = secured.log_path.read_text()
    assert "refused" in log and "unknown API key" in log  # the refusals are logged ...
    for secret in [s for _, s in KEYS.values()] + ["wrong-key-that-must-not-appear-in-logs"]:
        assert secret not in log  # ... the keys are not
        assert hashlib.sha256(secret.encode()).hexdigest() not in log


def test_key_file_errors_name_the_entry_not_the_key():
    with pytest.raises(KeyFileError, match="entry 2 .*scopes") as info:
        parse_keys("a read aaaaaaaaaaaaaaaaaaaaaa\nb delete bbbbbbbbbbbbbbbbbbbbbbbbbb\n", "keys")
    assert "bbbb" not in str(info.value)
    with pytest.raises(KeyFileError, match="used twice"):
        parse_keys("a read aaaaaaaaaaaaaaaaaaaa\na write cccccccccccccccccccc", "keys")
    with pytest.raises(KeyFileError, match="at least 16"):
        parse_keys("a read short", "keys")


# -- TLS --------------------------------------------------------------------------------------
def test_tls_client_needs_the_right_ca(secured, pki):
    with client(secured, pki, api_key=key("reader")) as good:
        assert good.health() == "SERVING"
    with client(secured, pki, api_key=key("reader"), ca="other", timeout=3) as wrong_ca:
        with pytest.raises(GatewayError) as info:
            wrong_ca.get(["x"])
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with SearchClient(secured.address, api_key=key("reader"), timeout=3) as plaintext:
        with pytest.raises(GatewayError) as info:
            plaintext.get(["x"])
        assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_of_the_ca(mutual, pki):
    with client(mutual, pki, client_cert="client") as good:
        assert good.get(["x"]).not_found == ["x"]  # reads are open on this gateway
        with pytest.raises(GatewayError) as info:
            good.upsert_batch(products("m", 1))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    for cert in (None, "stranger"):
        with client(mutual, pki, client_cert=cert, timeout=3) as refused:
            with pytest.raises(GatewayError) as info:
                refused.get(["x"])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE


# -- limits -------------------------------------------------------------------------------------
def _slow_stream(items: list[pb.Product], pause: float):
    for product in items:
        yield pb.UpsertProductsRequest(product=product)
        time.sleep(pause)


def _mutual_channel(mutual, pki) -> grpc.Channel:
    issued = pki["client"]
    credentials = grpc.ssl_channel_credentials(pki["ca"].cert_path.read_bytes(), issued.key.read_bytes(), issued.cert.read_bytes())
    return grpc.secure_channel(mutual.address, credentials)


def test_upsert_stream_item_cap(mutual, pki):
    with _mutual_channel(mutual, pki) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        metadata = [("authorization", f"Bearer {key('writer')}")]
        five = products("cap", 5, seed=60)
        assert stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in five), metadata=metadata, timeout=60).ok == 5
        six = products("cap6", 6, seed=70)
        with pytest.raises(grpc.RpcError) as info:
            stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in six), metadata=metadata, timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_upsert_items" in info.value.details()
        assert "ok 5" in info.value.details()
        got = stub.GetProducts(pb.GetProductsRequest(ids=[p.id for p in six]), metadata=metadata)
        assert [p.product.id for p in got.products] == [p.id for p in six[:5]]  # the first 5 were stored, as the error says


def test_stream_deadline_cap_and_concurrency_cap(mutual, pki):
    with _mutual_channel(mutual, pki) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        metadata = [("authorization", f"Bearer {key('writer')}")]
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:  # the client allows 60 s; the gateway caps streams at 3 s
            stub.UpsertProducts(_slow_stream(products("slow", 3, seed=80), pause=2.5), metadata=metadata, timeout=60)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "cap of 3s" in info.value.details()
        assert time.monotonic() - started < 10

        slow = [stub.UpsertProducts.future(_slow_stream(products(f"busy{i}", 1, seed=90 + i), pause=2.0), metadata=metadata, timeout=30)
                for i in range(3)]
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as info:  # 3 calls in progress: the 4th is refused
            stub.GetProducts(pb.GetProductsRequest(ids=["x"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert all(f.result().ok == 1 for f in slow)
        assert list(stub.GetProducts(pb.GetProductsRequest(ids=["x"]), timeout=10).not_found) == ["x"]  # and it serves again


def test_unary_deadline_cap(gateway_repository, tmp_path):
    """A cap far below what a call needs: every unary call ends DEADLINE_EXCEEDED at the cap, health stays open."""
    gateway = start_gateway(gateway_repository, str(tmp_path / "products.db"), tmp_path, "--max-deadline-s", "0.001")
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:  # the client would wait 30 s
            gateway.stub.Embed(pb.EmbedRequest(texts=["a text to embed"] * 32, images=[png(i) for i in range(32)]), timeout=30)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "cap of 0.001s" in info.value.details()
        assert time.monotonic() - started < 5
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        status = health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        gateway.stop()
