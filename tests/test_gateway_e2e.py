"""End to end over a real socket: `python -m gateway` (tiny models, Milvus Lite file), once per backend:
`local` (ONNX Runtime in-process) and `triton` (a real tritonserver), the same assertions for both.

Tiny models have random weights, so these tests check mechanics exactly (own image ranks first,
filters exclude, scores follow the fusion formula from Embed vectors), never search quality.
"""
from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.gateway_fixtures import *  # noqa: F401,F403
from tests.gateway_fixtures import embed_image, embed_text, ids, pb, png, stored_vectors


IMAGE_ONLY = pb.ChannelWeights(image=1.0, title=0.0, caption=0.0)


# -- search ---------------------------------------------------------------------------------------
def test_image_search_finds_own_product_first(gateway, catalog):
    for product_id in ("sku-00", "sku-05", "sku-11"):
        response = gateway.stub.Search(
            pb.SearchRequest(image=catalog[product_id].image, top_k=5, mode=pb.SEARCH_MODE_MULTI_VECTOR, weights=IMAGE_ONLY)
        )
        assert ids(response)[0] == product_id
        assert response.hits[0].channel_scores["image"] == pytest.approx(1.0, abs=1e-4)


def test_text_search_fused_scores_match_hand_computation(gateway, catalog):
    response = gateway.stub.Search(pb.SearchRequest(text="product number 3", top_k=12))
    assert len(response.hits) == 12 and response.mode == pb.SEARCH_MODE_FUSED
    query = embed_text(gateway.stub, "product number 3")
    scores = [hit.score for hit in response.hits]
    assert scores == sorted(scores, reverse=True)
    for hit in response.hits[:3]:
        vectors = stored_vectors(gateway.stub, hit.product.id)
        assert hit.score == pytest.approx(float(query @ vectors["fused"]), abs=1e-4)
        assert hit.channel_scores["title"] == pytest.approx(float(query @ vectors["title"]), abs=1e-4)


def test_multi_vector_weighted_score_follows_the_formula(gateway, catalog):
    weights = {"image": 0.2, "title": 0.5, "caption": 0.3}
    response = gateway.stub.Search(
        pb.SearchRequest(text="a shoes for tests", top_k=12, mode=pb.SEARCH_MODE_MULTI_VECTOR, weights=pb.ChannelWeights(**weights))
    )
    assert len(response.hits) == 12
    query = embed_text(gateway.stub, "a shoes for tests")
    for hit in response.hits[:4]:
        vectors = stored_vectors(gateway.stub, hit.product.id)
        expected = sum(w * float(query @ vectors[c]) for c, w in weights.items()) / sum(weights.values())
        assert hit.score == pytest.approx(expected, abs=1e-4)
    assert [h.score for h in response.hits] == sorted((h.score for h in response.hits), reverse=True)


def test_multi_vector_rrf(gateway, catalog):
    for weights in (pb.ChannelWeights(image=1, title=1, caption=1), pb.ChannelWeights(image=2, title=1, caption=0)):
        response = gateway.stub.Search(
            pb.SearchRequest(image=catalog["sku-04"].image, top_k=5, mode=pb.SEARCH_MODE_MULTI_VECTOR, combine=pb.COMBINE_RRF, weights=weights)
        )
        assert len(response.hits) == 5
        assert [h.score for h in response.hits] == sorted((h.score for h in response.hits), reverse=True)
    # image channel ranks sku-04 first and dominates the weighted RRF (weights normalized: 2/3 and 1/3)
    assert ids(response)[0] == "sku-04" and response.combine == pb.COMBINE_RRF
    assert response.hits[0].score >= (2 / 3) / 61 - 1e-6
    assert response.weights.image == pytest.approx(2 / 3) and response.weights.title == pytest.approx(1 / 3)


def test_composed_query_uses_image_and_text(gateway, catalog):
    image, text = catalog["sku-07"].image, "but in red"
    response = gateway.stub.Search(pb.SearchRequest(image=image, text=text, top_k=3, text_weight=0.25))
    q = 0.75 * embed_image(gateway.stub, image) + 0.25 * embed_text(gateway.stub, text)
    q /= np.linalg.norm(q)
    vectors = stored_vectors(gateway.stub, response.hits[0].product.id)
    assert response.hits[0].score == pytest.approx(float(q @ vectors["fused"]), abs=1e-4)


@pytest.mark.parametrize("mode", [pb.SEARCH_MODE_FUSED, pb.SEARCH_MODE_MULTI_VECTOR])
def test_filters_exclude_others(gateway, catalog, mode):
    def search(**filters):
        return ids(gateway.stub.Search(pb.SearchRequest(text="product", top_k=12, mode=mode, filters=pb.Filters(**filters))))

    assert set(search(categories=["dress"])) == {k for k, p in catalog.items() if p.category == "dress"}
    assert set(search(brands=['quote"brand'])) == {k for k, p in catalog.items() if p.brand == 'quote"brand'}
    assert set(search(brands=["back\\slash"])) == {k for k, p in catalog.items() if p.brand == "back\\slash"}
    assert set(search(min_price=30, max_price=60)) == {k for k, p in catalog.items() if 30 <= p.price <= 60}
    assert set(search(in_stock=False)) == {k for k, p in catalog.items() if not p.in_stock}
    assert set(search(tags_any=["sale"])) == {k for k, p in catalog.items() if "sale" in p.tags}
    assert set(search(ids=["sku-03", "sku-09"])) == {"sku-03", "sku-09"}
    attr = [pb.AttributeFilter(key="size", values=["S"]), pb.AttributeFilter(key="colour", values=["red"])]
    assert set(search(attributes=attr)) == {k for k, p in catalog.items() if p.attributes["size"] == "S" and p.attributes["colour"] == "red"}
    assert search(categories=['" or 1==1 or "']) == []
    assert search(categories=["dress"], brands=["acme"]) == []  # dress items are quote"brand


def test_image_only_search_with_exact_id_filter(gateway, catalog):
    response = gateway.stub.Search(pb.SearchRequest(image=catalog["sku-01"].image, top_k=5, filters=pb.Filters(ids=["sku-06"])))
    assert ids(response) == ["sku-06"]


def test_search_reports_timings(gateway, catalog):
    response, call = gateway.stub.Search.with_call(pb.SearchRequest(text="product", top_k=3))
    timing = dict(call.trailing_metadata())["server-timing"]
    assert "inference;dur=" in timing and "store;dur=" in timing
    assert response.timings.total_ms >= response.timings.store_ms + response.timings.inference_ms > 0


# -- upsert / get / delete -------------------------------------------------------------------------
def test_upsert_is_idempotent_and_reports_items(gateway, catalog):
    product = pb.Product(id="idem-1", image=png(100), title="first", category="hat", price=5)
    bad = pb.Product(id="idem-bad", image=b"\x89PNG\r\n\x1a\nbroken")
    no_image = pb.Product(id="idem-noimg", title="x")
    bad_id = pb.Product(id="has space", image=png(1))
    updated = pb.Product(id="idem-1", image=png(100), title="second", category="hat", price=6)
    stream = [product, bad, no_image, bad_id, updated]
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in stream))
    assert (response.ok, response.invalid, response.failed) == (2, 3, 0)
    by_index = {r.index: r for r in response.results}
    assert by_index[0].status == by_index[4].status == pb.ITEM_STATUS_OK
    assert by_index[1].status == pb.ITEM_STATUS_INVALID and "image" in by_index[1].reason
    assert "image is empty" in by_index[2].reason
    assert "product.id" in by_index[3].reason
    assert len(by_index[0].tags) > 0
    found = gateway.stub.Search(pb.SearchRequest(text="second", top_k=20, filters=pb.Filters(ids=["idem-1"])))
    assert ids(found) == ["idem-1"]  # one row, not two
    got = gateway.stub.GetProducts(pb.GetProductsRequest(ids=["idem-1"])).products
    assert len(got) == 1 and got[0].product.title == "second" and got[0].product.price == 6


def test_get_and_delete(gateway, catalog):
    gateway.stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=pb.Product(id="del-1", image=png(200), title="gone soon"))]))
    got = gateway.stub.GetProducts(pb.GetProductsRequest(ids=["sku-01", "del-1", "missing"]))
    assert [p.product.id for p in got.products] == ["sku-01", "del-1"] and list(got.not_found) == ["missing"]
    record = got.products[0].product
    source = catalog["sku-01"]
    assert (record.title, record.category, record.brand, record.price, record.in_stock) == (
        source.title, source.category, source.brand, source.price, source.in_stock)
    assert dict(record.attributes) == dict(source.attributes) and "sale" in record.tags
    deleted = gateway.stub.DeleteProducts(pb.DeleteProductsRequest(ids=["del-1", "missing"]))
    assert deleted.deleted == 1 and list(deleted.not_found) == ["missing"]
    assert list(gateway.stub.GetProducts(pb.GetProductsRequest(ids=["del-1"])).not_found) == ["del-1"]


# -- describe / embed ------------------------------------------------------------------------------
def test_describe_and_embed(gateway, catalog, gateway_repository):
    from runtime.manifest import Manifest

    manifest = Manifest.load(gateway_repository)
    described = gateway.stub.Describe(pb.DescribeRequest(image=catalog["sku-02"].image, max_tags=4))
    assert 0 < len(described.tags) <= 4
    assert {t.facet for t in described.tags} <= {"colour", "material", "pattern", "style", "category"}
    if manifest.blip:
        assert described.caption  # the tiny BLIP babbles, but it speaks
    embedded = gateway.stub.Embed(pb.EmbedRequest(texts=["red shoes", "blue bag"], images=[png(1)]))
    assert embedded.dim == manifest.embed_dim and len(embedded.text_vectors) == 2 and len(embedded.image_vectors) == 1
    assert embedded.model == manifest.clip["arch"]  # from the manifest on both backends
    for vector in [*embedded.text_vectors, *embedded.image_vectors]:
        assert np.linalg.norm(vector.values) == pytest.approx(1.0, abs=1e-4)


def test_rerank(gateway, catalog, gateway_repository):
    from runtime.manifest import Manifest

    request = pb.SearchRequest(image=catalog["sku-02"].image, top_k=4, rerank=True)
    if not (Manifest.load(gateway_repository).blip or {}).get("itm"):
        with pytest.raises(grpc.RpcError) as info:
            gateway.stub.Search(request)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "ITM" in info.value.details()
        return
    response = gateway.stub.Search(request)
    assert len(response.hits) == 4 and all(h.HasField("rerank_score") and 0 <= h.rerank_score <= 1 for h in response.hits)
    assert [h.score for h in response.hits] == sorted((h.score for h in response.hits), reverse=True)


# -- bad input: INVALID_ARGUMENT with a message that names the problem -------------------------------
@pytest.mark.parametrize(
    "request_, words",
    [
        (pb.SearchRequest(), "empty query"),
        (pb.SearchRequest(text="   "), "empty query"),
        (pb.SearchRequest(image=b"not an image at all"), "image"),
        (pb.SearchRequest(text="x", top_k=101), "top_k 101 is out of range"),
        (pb.SearchRequest(text="x", top_k=-1), "top_k -1 is out of range"),
        (pb.SearchRequest(text="x", filters=pb.Filters(attributes=[pb.AttributeFilter(key="owner", values=["me"])])), "unknown filter field 'attributes.owner'"),
        (pb.SearchRequest(text="x", filters=pb.Filters(attributes=[pb.AttributeFilter(key='size"] or 1==1', values=["M"])])), "unknown filter field"),
        (pb.SearchRequest(text="x", filters=pb.Filters(min_price=50, max_price=10)), "min_price"),
        (pb.SearchRequest(text="x", weights=pb.ChannelWeights(image=-1)), "weight"),
        (pb.SearchRequest(text="x", weights=pb.ChannelWeights(image=0, title=0, caption=0)), "weight"),
        (pb.SearchRequest(text="x" * 3000), "text is 3000 characters"),
    ],
)
def test_search_bad_input(gateway, catalog, request_, words):
    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Search(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


def test_other_rpcs_bad_input(gateway):
    cases = [
        (lambda: gateway.stub.Describe(pb.DescribeRequest(image=b"\xff\xd8\xff\xe0corrupt jpeg")), "image"),
        (lambda: gateway.stub.Describe(pb.DescribeRequest()), "image is empty"),
        (lambda: gateway.stub.Embed(pb.EmbedRequest()), "empty request"),
        (lambda: gateway.stub.Embed(pb.EmbedRequest(images=[b"junk"])), "image"),
        (lambda: gateway.stub.GetProducts(pb.GetProductsRequest()), "ids is empty"),
        (lambda: gateway.stub.DeleteProducts(pb.DeleteProductsRequest(ids=['a" or id != "'])), "is invalid"),
    ]
    for call, words in cases:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in info.value.details()


# -- health, reflection, metrics -----------------------------------------------------------------
def test_first_start_on_an_empty_store_serves_at_the_first_probe(gateway):
    """The new collection waits for the models' dimension; once they are up it is created in the same
    probe, not one probe interval later (each session gateway starts on an empty store)."""
    states = [line.split("dependencies ", 1)[1].split()[0] for line in gateway.log_path.read_text().splitlines()
              if "gateway.server: dependencies " in line]
    assert states[:1] == ["up"], states


def test_health_serving_and_reflection_off_by_default(gateway):
    health = health_pb2_grpc.HealthStub(gateway.channel)
    for service in ("", "retrieval.v1.Retrieval"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    with pytest.raises(grpc.RpcError) as info:  # settings `reflection` enables it (tests/test_gateway_security.py)
        list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metrics_exported(gateway, catalog):
    gateway.stub.Search(pb.SearchRequest(text="metrics please", top_k=2))
    text = urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5).read().decode()
    assert 'rpc_requests_total{code="OK",rpc="Search"}' in text
    for stage in ("preprocess", "inference", "store"):
        assert f'stage_latency_seconds_bucket{{le="0.005",rpc="Search",stage="{stage}"}}' in text
    assert 'rpc_latency_seconds_count{rpc="UpsertProducts"}' in text
    assert 'dependency_up{dependency="store"} 1.0' in text
