"""Bad input against the real gateway: each bad request is INVALID_ARGUMENT with a message naming the
problem, odd but valid images are served, and the gateway keeps serving (health SERVING after each).
"""
from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from tests.gateway_fixtures import *  # noqa: F401,F403
from tests.gateway_fixtures import pb, png

SEARCH = "/retrieval.v1.Retrieval/Search"


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(mode: str = "RGB", size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def png_header_only() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def decompression_bomb() -> bytes:
    """A 20000x20000 grey PNG: about 400 M pixels, yet only a few hundred KB compressed."""
    return encode(Image.new("L", (20000, 20000), 128), "PNG", optimize=False)


BAD_IMAGES = {
    "not an image": (b"hello, I am text", "not a supported image"),
    "truncated JPEG": (encode(photo(), "JPEG")[:300], "image"),
    "truncated PNG": (encode(photo(), "PNG")[:120], "image"),
    "corrupt JPEG": (encode(photo(), "JPEG")[:200] + b"\x00" * 500, "image"),
    "header-only PNG": (png_header_only(), "image"),
}


def odd_images() -> dict[str, bytes]:
    frames = [photo(size=(32, 32)), photo("L", (32, 32)).convert("RGB")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    sixteen = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    return {
        "CMYK JPEG": encode(photo("CMYK"), "JPEG"),
        "16-bit PNG": encode(sixteen, "PNG"),
        "palette PNG": encode(photo("P"), "PNG"),
        "animated GIF": buffer.getvalue(),
        "1x1 PNG": encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "1x2000 PNG": encode(Image.new("RGB", (1, 2000), (10, 200, 10)), "PNG"),
        "3000x2 PNG": encode(Image.new("RGB", (3000, 2), (10, 10, 200)), "PNG"),
        "WebP": encode(photo(), "WEBP"),
        "RGBA PNG": encode(photo("RGBA"), "PNG"),
        "grayscale JPEG": encode(photo("L"), "JPEG"),
    }


def assert_serving(gateway) -> None:
    health = health_pb2_grpc.HealthStub(gateway.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def invalid(call, *args, contains: str = "", **kwargs) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=60, **kwargs)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
    details = info.value.details()
    assert contains.lower() in details.lower(), details
    assert "Traceback" not in details and "object at 0x" not in details
    return details


# -- images ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_refused_everywhere(gateway, catalog, name):
    data, words = BAD_IMAGES[name]
    invalid(gateway.stub.Search, pb.SearchRequest(image=data), contains=words)
    invalid(gateway.stub.Describe, pb.DescribeRequest(image=data), contains=words)
    # the header checks name the field; a body that fails only when decoded is refused by the backend's decode
    invalid(gateway.stub.Embed, pb.EmbedRequest(images=[png(1), data]), contains="images[1]" if name == "not an image" else words)
    result = gateway.stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=pb.Product(id=f"bad-{len(name)}", image=data))]), timeout=60)
    assert result.invalid == 1 and words in result.results[0].reason.lower()
    assert_serving(gateway)


def test_empty_oversized_and_bomb_images(gateway, catalog):
    invalid(gateway.stub.Describe, pb.DescribeRequest(image=b""), contains="empty")
    invalid(gateway.stub.Embed, pb.EmbedRequest(images=[b""]), contains="images[0]")
    invalid(gateway.stub.Search, pb.SearchRequest(image=b"\x00" * (10 * 1024 * 1024 + 1)), contains="the limit is")
    bomb = decompression_bomb()
    assert len(bomb) < 2_000_000
    invalid(gateway.stub.Search, pb.SearchRequest(image=bomb), contains="pixels")
    invalid(gateway.stub.Describe, pb.DescribeRequest(image=bomb), contains="pixels")
    assert_serving(gateway)


def test_odd_but_valid_images_are_served(gateway, catalog):
    images = odd_images()
    for name, data in images.items():
        hits = gateway.stub.Search(pb.SearchRequest(image=data, top_k=3), timeout=60).hits
        assert len(hits) == 3, name
        assert gateway.stub.Describe(pb.DescribeRequest(image=data), timeout=60).caption is not None
    vectors = gateway.stub.Embed(pb.EmbedRequest(images=list(images.values())), timeout=60).image_vectors
    assert all(abs(np.linalg.norm(v.values) - 1) < 1e-3 for v in vectors)
    stream = [pb.UpsertProductsRequest(product=pb.Product(id=f"odd-{i}", image=data, title=name)) for i, (name, data) in enumerate(images.items())]
    assert gateway.stub.UpsertProducts(iter(stream), timeout=120).ok == len(images)
    assert_serving(gateway)


# -- text -----------------------------------------------------------------------------------------
def test_bad_text(gateway, catalog):
    invalid(gateway.stub.Search, pb.SearchRequest(text=""), contains="empty query")
    invalid(gateway.stub.Search, pb.SearchRequest(text=" \t\n  "), contains="empty query")
    invalid(gateway.stub.Search, pb.SearchRequest(text="x" * 1_000_000), contains="the limit is")
    invalid(gateway.stub.Embed, pb.EmbedRequest(texts=["   "]), contains="texts[0]")
    invalid(gateway.stub.Search, pb.SearchRequest(text="nul\x00byte"), contains="NUL")
    invalid(gateway.stub.Search, pb.SearchRequest(text="bell\x07and\x1bescape"), contains="control character")
    # tabs and newlines are ordinary whitespace; a text longer than the model context (77 tokens) is truncated
    assert gateway.stub.Search(pb.SearchRequest(text="red\tshoes\nfor running", top_k=2), timeout=30).hits
    long_text = " ".join(["word"] * 300)  # about 300 tokens
    assert gateway.stub.Search(pb.SearchRequest(text=long_text, top_k=2), timeout=30).hits
    truncated = gateway.stub.Embed(pb.EmbedRequest(texts=[long_text, " ".join(["word"] * 150)])).text_vectors
    assert np.allclose(truncated[0].values, truncated[1].values, atol=1e-5)  # both cut at the context length
    assert_serving(gateway)


def test_invalid_utf8_in_a_string_field(gateway, catalog):
    search = gateway.channel.unary_unary(SEARCH, request_serializer=None, response_deserializer=pb.SearchResponse.FromString)
    raw = b"\x0a\x03\xff\xfe\xfd"  # field 1 (text), 3 bytes that are not UTF-8
    with pytest.raises(grpc.RpcError) as info:
        search(raw, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (info.value.code(), info.value.details())
    assert "not a valid" in info.value.details()
    upsert = gateway.channel.stream_unary(
        "/retrieval.v1.Retrieval/UpsertProducts", request_serializer=None, response_deserializer=pb.UpsertProductsResponse.FromString
    )
    good = pb.UpsertProductsRequest(product=pb.Product(id="utf8-ok", image=png(5))).SerializeToString()
    bad_product = b"\x0a\x02\xc3\x28"  # Product.id = invalid UTF-8
    bad = b"\x0a" + bytes([len(bad_product)]) + bad_product
    with pytest.raises(grpc.RpcError) as info:
        upsert(iter([good, bad]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "item 1" in info.value.details()
    assert_serving(gateway)


# -- requests ---------------------------------------------------------------------------------------
def test_bad_search_requests(gateway, catalog):
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", top_k=-1), contains="top_k")
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", top_k=100_000), contains="top_k")
    assert len(gateway.stub.Search(pb.SearchRequest(text="x", top_k=0)).hits) == 10  # 0 = the default
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", mode=99), contains="mode")
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", combine=42), contains="combine")
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", filters=pb.Filters(attributes=[pb.AttributeFilter(key="owner", values=["a"])])),
            contains="attributes.owner")
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", filters=pb.Filters(min_price=50, max_price=10)), contains="min_price")
    for weights in (pb.ChannelWeights(image=float("nan")), pb.ChannelWeights(title=-1), pb.ChannelWeights(image=0, title=0, caption=0)):
        invalid(gateway.stub.Search, pb.SearchRequest(text="x", weights=weights), contains="weight")
    # weights above 1 are normalized, never passed raw: the same ranking as the same proportions below 1
    big = gateway.stub.Search(pb.SearchRequest(text="product", top_k=5, weights=pb.ChannelWeights(image=50, title=30, caption=20)))
    small = gateway.stub.Search(pb.SearchRequest(text="product", top_k=5, weights=pb.ChannelWeights(image=0.5, title=0.3, caption=0.2)))
    assert [h.product.id for h in big.hits] == [h.product.id for h in small.hits]
    assert [round(h.score, 4) for h in big.hits] == [round(h.score, 4) for h in small.hits]
    invalid(gateway.stub.GetProducts, pb.GetProductsRequest(ids=[]), contains="ids")
    invalid(gateway.stub.GetProducts, pb.GetProductsRequest(ids=["bad id"]), contains="ids")
    invalid(gateway.stub.DeleteProducts, pb.DeleteProductsRequest(ids=["x" * 200]), contains="ids")
    assert_serving(gateway)


@pytest.mark.parametrize("value", ['acme" or 1==1 or brand=="', "acme\\", 'x") or (1==1', "acme\\\" or true or \\\"", "a' or '1'='1"])
def test_filter_values_cannot_break_the_expression(gateway, catalog, value):
    hits = gateway.stub.Search(pb.SearchRequest(text="product", top_k=50, filters=pb.Filters(brands=[value]))).hits
    assert hits == []  # no product has that brand: the value stayed one string literal
    tagged = gateway.stub.Search(pb.SearchRequest(text="product", top_k=50, filters=pb.Filters(categories=["shoes"], tags_any=[value]))).hits
    assert tagged == []


def test_filter_value_with_a_newline_is_refused(gateway, catalog):
    invalid(gateway.stub.Search, pb.SearchRequest(text="x", filters=pb.Filters(brands=["acme\nor 1==1"])), contains="line break")


def test_quoted_brand_matches_exactly(gateway, catalog):
    hits = gateway.stub.Search(pb.SearchRequest(text="product", top_k=50, filters=pb.Filters(brands=['quote"brand']))).hits
    assert hits and {h.product.brand for h in hits} == {'quote"brand'}


def test_message_over_the_size_limit(gateway, catalog):
    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Embed(pb.EmbedRequest(texts=["x"], images=[b"\x00" * (33 * 1024 * 1024)]), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own answer to an oversized message
    assert_serving(gateway)


# -- upserts --------------------------------------------------------------------------------------
def test_bad_upsert_items_are_reported_and_the_good_ones_land(gateway, catalog):
    stream = [
        pb.Product(id="good-1", image=png(11), title="first copy"),
        pb.Product(id="good-1", image=png(11), title="second copy"),  # duplicate id: the later copy wins
        pb.Product(id="no-image", title="x"),
        pb.Product(id="bad id!", image=png(12)),
        pb.Product(id="x" * 129, image=png(13)),
        pb.Product(id="long-title", image=png(14), title="t" * 5000),
        pb.Product(id="long-tag", image=png(15), tags=["t" * 1000]),
        pb.Product(id="long-attr", image=png(16), attributes={"size": "s" * 1000}),
        pb.Product(id="nan-price", image=png(17), price=float("nan")),
        pb.Product(id="good-2", image=png(18), title="fine"),
    ]
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in stream), timeout=120)
    by_index = {r.index: r for r in response.results}
    assert [by_index[i].status == pb.ITEM_STATUS_OK for i in range(len(stream))] == [
        True, True, False, False, False, False, False, False, False, True]
    reasons = [by_index[i].reason for i in range(2, 9)]
    for reason, words in zip(reasons, ["image is empty", "product.id", "product.id", "title", "tags", "attributes", "price"]):
        assert words in reason, reason
    assert len(by_index[4].id) <= 128
    got = gateway.stub.GetProducts(pb.GetProductsRequest(ids=["good-1", "good-2"]))
    assert [p.product.title for p in got.products] == ["second copy", "fine"]
    assert_serving(gateway)
