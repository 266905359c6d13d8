"""Generated requests of every RPC against a running gateway (hypothesis): never INTERNAL or UNKNOWN,
and health stays SERVING. Hypothesis prints the failing example (shrunk). MM_FUZZ_EXAMPLES sets
how many examples each RPC gets (default 25; CI keeps it small, a soak of the validation can raise it).
"""
from __future__ import annotations

import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)
from tests.gateway_fixtures import pb, png, start_gateway

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MM_FUZZ_EXAMPLES", "25"))
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def target(gateway_repository, tmp_path_factory):
    """A gateway of its own (generated deletes must not touch other tests' catalogs), with a few products."""
    work = tmp_path_factory.mktemp("fuzz")
    gateway = start_gateway(gateway_repository, str(work / "products.db"), work)
    seed = [pb.Product(id=f"f-{i}", image=png(900 + i), title=f"fuzz product {i}", brand="acme", price=i, tags=["t"]) for i in range(5)]
    assert gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in seed), timeout=60).ok == 5
    yield gateway
    gateway.stop()


IMAGES = st.sampled_from([b"", png(1), png(2, size=9), b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff\xe0" + b"\x00" * 40]) | st.binary(max_size=64)
TEXT = st.text(max_size=80) | st.sampled_from(["", "  ", "red shoes", "x" * 2001, "a\x00b", 'brand" or 1==1'])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from([0.0, 1.0, -1.0, 1e30])
INTS = st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.integers(min_value=-3, max_value=120)
IDS = st.lists(st.text(max_size=20) | st.sampled_from(["f-1", "f-2", "nope", "a b", "x" * 200]), max_size=5)
STRINGS = st.lists(TEXT, max_size=3)


def optional(strategy):
    return st.none() | strategy


@st.composite
def filters(draw):
    message = pb.Filters(
        categories=draw(STRINGS), brands=draw(STRINGS), tags_any=draw(STRINGS), tags_all=draw(STRINGS), ids=draw(IDS),
        attributes=[pb.AttributeFilter(key=draw(st.sampled_from(["size", "colour", "owner", "", "a b"])), values=draw(STRINGS))
                    for _ in range(draw(st.integers(0, 2)))],
    )
    for name in ("min_price", "max_price"):
        value = draw(optional(st.floats(allow_nan=True, allow_infinity=True)))
        if value is not None:
            setattr(message, name, value)
    in_stock = draw(optional(st.booleans()))
    if in_stock is not None:
        message.in_stock = in_stock
    return message


@st.composite
def search_requests(draw):
    if draw(st.booleans()):  # anything
        request = pb.SearchRequest(text=draw(TEXT), image=draw(IMAGES), top_k=draw(INTS), mode=draw(INTS), combine=draw(INTS),
                                   rerank=draw(st.booleans()), rrf_k=draw(INTS))
    else:  # plausible queries, so that the search paths behind validation run too
        request = pb.SearchRequest(text=draw(st.sampled_from(["fuzz product", "red", ""])), image=draw(st.sampled_from([b"", png(4)])),
                                   top_k=draw(st.integers(0, 30)), mode=draw(st.integers(0, 2)), combine=draw(st.integers(0, 2)),
                                   rrf_k=draw(st.integers(0, 100)))
        if not request.text and not request.image:
            request.text = "fuzz"
    if draw(st.booleans()):
        weights = pb.ChannelWeights()
        for channel in ("image", "title", "caption"):
            value = draw(optional(FLOATS))
            if value is not None:
                setattr(weights, channel, value)
        request.weights.CopyFrom(weights)
    if draw(st.booleans()):
        request.filters.CopyFrom(draw(filters()))
    text_weight = draw(optional(FLOATS))
    if text_weight is not None:
        request.text_weight = text_weight
    return request


@st.composite
def products(draw):
    product = pb.Product(
        id=draw(st.sampled_from(["g-1", "g-2", ""]) | st.text(max_size=30)), image=draw(IMAGES | st.just(png(3))), title=draw(TEXT),
        description=draw(TEXT), category=draw(TEXT), brand=draw(TEXT), tags=draw(STRINGS), image_uri=draw(TEXT),
        attributes=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)),
    )
    price = draw(optional(FLOATS))
    if price is not None:
        product.price = price
    in_stock = draw(optional(st.booleans()))
    if in_stock is not None:
        product.in_stock = in_stock
    return product


def call(gateway, method, request, **kwargs):
    try:
        method(request, timeout=60, **kwargs)
        event("OK")
    except grpc.RpcError as error:
        event(error.code().name)  # pytest --hypothesis-show-statistics shows the mix of outcomes
        assert error.code() not in FORBIDDEN, f"{error.code().name}: {error.details()}"
    health = health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@fuzz
@given(request=search_requests())
def test_search(target, request):
    call(target, target.stub.Search, request)


@fuzz
@given(items=st.lists(products(), min_size=0, max_size=4))
def test_upsert(target, items):
    call(target, target.stub.UpsertProducts, iter([pb.UpsertProductsRequest(product=p) for p in items]))


@fuzz
@given(ids=IDS, include_vectors=st.booleans())
def test_get(target, ids, include_vectors):
    call(target, target.stub.GetProducts, pb.GetProductsRequest(ids=ids, include_vectors=include_vectors))


@fuzz
@given(ids=IDS)
def test_delete(target, ids):
    call(target, target.stub.DeleteProducts, pb.DeleteProductsRequest(ids=ids))


@fuzz
@given(image=IMAGES, max_tags=INTS)
def test_describe(target, image, max_tags):
    call(target, target.stub.Describe, pb.DescribeRequest(image=image, max_tags=max_tags))


@fuzz
@given(texts=st.lists(TEXT, max_size=4), images=st.lists(IMAGES, max_size=3))
def test_embed(target, texts, images):
    call(target, target.stub.Embed, pb.EmbedRequest(texts=texts, images=images))


@fuzz
@given(raw=st.binary(max_size=200))
def test_raw_bytes_to_every_method(target, raw):
    """Arbitrary bytes as the message of each method (what a broken or hostile client sends)."""
    for method in ("Search", "GetProducts", "DeleteProducts", "Describe", "Embed"):
        stub = target.channel.unary_unary(f"/retrieval.v1.Retrieval/{method}", request_serializer=None, response_deserializer=None)
        call(target, stub, raw)
    upsert = target.channel.stream_unary("/retrieval.v1.Retrieval/UpsertProducts", request_serializer=None, response_deserializer=None)
    call(target, upsert, iter([raw]))
