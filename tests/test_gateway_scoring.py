"""Scoring through the real gateway (socket, local backend, Milvus Lite): every hit's score equals
sum_{c in P} w_c cos(q, v_c) / sum_{c in P} w_c computed here by hand from Embed and GetProducts
vectors, request weights are honoured in every mode, absent channels are absent, and the keyword
channel (Milvus BM25) finds exact terms."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from gateway.settings import Settings
from tests.gateway_fixtures import *  # noqa: F401,F403
from tests.gateway_fixtures import embed_text, ids, pb, png, stored_vectors

DENSE = ("image", "title", "caption")


def by_hand(query: np.ndarray, vectors: dict[str, np.ndarray], weights: dict[str, float]) -> float:
    """The documented formula, written again: normalized weights over the channels the product has."""
    have = [c for c in DENSE if c in vectors and weights.get(c, 0) > 0]
    total = sum(weights[c] for c in have)
    return sum(weights[c] * float(query @ vectors[c]) for c in have) / total


@pytest.fixture(scope="module")
def sparse_products(gateway, catalog):
    """Products with channels missing, and keyword-only words (brand, SKU code), removed afterwards."""
    products = [
        pb.Product(id="bare-1", image=png(301)),  # image only: no title, caption comes from the captioner/tags
        pb.Product(id="kw-1", image=png(302), title="Trail runner ZX-4411B", brand="Quokka", description="Waterproof hiking boots"),
        pb.Product(id="kw-2", image=png(303), title="Café crème blouse", brand="Lumen", description="size 42 linen"),
    ]
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products), timeout=120)
    assert response.ok == len(products), response
    yield {p.id: p for p in products}
    gateway.stub.DeleteProducts(pb.DeleteProductsRequest(ids=[p.id for p in products]))


def test_fused_vector_is_the_unnormalized_weighted_sum(gateway, catalog, sparse_products):
    full = stored_vectors(gateway.stub, "sku-02")
    assert np.allclose(full["fused"], 0.5 * full["image"] + 0.3 * full["title"] + 0.2 * full["caption"], atol=1e-5)
    bare = stored_vectors(gateway.stub, "bare-1")
    assert "title" not in bare and "image" in bare  # no title text: no title channel, nothing faked
    have = [c for c in DENSE if c in bare]
    total = sum({"image": 0.5, "title": 0.3, "caption": 0.2}[c] for c in have)
    expected = sum({"image": 0.5, "title": 0.3, "caption": 0.2}[c] * bare[c] for c in have) / total
    assert np.allclose(bare["fused"], expected, atol=1e-5)


@pytest.mark.parametrize("mode", [pb.SEARCH_MODE_FUSED, pb.SEARCH_MODE_MULTI_VECTOR])
def test_hit_scores_equal_the_formula(gateway, catalog, sparse_products, mode):
    text = "a dress for tests"
    response = gateway.stub.Search(pb.SearchRequest(text=text, top_k=15, mode=mode))
    assert response.mode == mode and len(response.hits) == 15
    weights = {c: getattr(response.weights, c) for c in DENSE}
    assert sum(weights.values()) == pytest.approx(1.0)
    query = embed_text(gateway.stub, text)
    for hit in response.hits:
        vectors = stored_vectors(gateway.stub, hit.product.id)
        assert hit.score == pytest.approx(by_hand(query, vectors, weights), abs=1e-4), hit.product.id
        assert set(hit.channel_scores) - {"fused"} == {c for c in DENSE if c in vectors}
    assert [h.score for h in response.hits] == sorted((h.score for h in response.hits), reverse=True)


@pytest.mark.parametrize("mode", [pb.SEARCH_MODE_FUSED, pb.SEARCH_MODE_MULTI_VECTOR])
def test_request_weights_change_the_ranking_in_every_mode(gateway, catalog, mode):
    text = "product number 7"
    query = embed_text(gateway.stub, text)
    rankings = []
    for weights in ({"image": 1.0, "title": 0.0, "caption": 0.0}, {"image": 0.0, "title": 1.0, "caption": 0.0}):
        response = gateway.stub.Search(pb.SearchRequest(text=text, top_k=12, mode=mode, weights=pb.ChannelWeights(**weights)))
        # weights other than the stored fused vectors' are answered by exact multi-vector scoring, and said so
        assert response.mode == pb.SEARCH_MODE_MULTI_VECTOR
        assert {c: getattr(response.weights, c) for c in DENSE} == pytest.approx(weights)
        for hit in response.hits:
            assert hit.score == pytest.approx(by_hand(query, stored_vectors(gateway.stub, hit.product.id), weights), abs=1e-4)
        rankings.append(ids(response))
    assert rankings[0] != rankings[1]


def test_unnormalized_request_weights_are_normalized(gateway, catalog):
    big = gateway.stub.Search(pb.SearchRequest(text="bag", top_k=5, weights=pb.ChannelWeights(image=50, title=30, caption=20)))
    assert big.mode == pb.SEARCH_MODE_FUSED  # proportional to the stored weights: the fused vector answers
    assert (big.weights.image, big.weights.title, big.weights.caption) == pytest.approx((0.5, 0.3, 0.2))
    multi = gateway.stub.Search(pb.SearchRequest(text="bag", top_k=5, mode=pb.SEARCH_MODE_MULTI_VECTOR, weights=pb.ChannelWeights(image=3, title=0, caption=1)))
    assert (multi.weights.image, multi.weights.caption) == pytest.approx((0.75, 0.25))


def test_fused_and_multi_vector_agree_on_the_default_weights(gateway, catalog, sparse_products):
    for request in (pb.SearchRequest(text="shoes", top_k=10), pb.SearchRequest(image=catalog["sku-03"].image, top_k=10)):
        fused = gateway.stub.Search(request)
        request.mode = pb.SEARCH_MODE_MULTI_VECTOR
        multi = gateway.stub.Search(request)
        assert ids(fused) == ids(multi)
        assert [h.score for h in fused.hits] == pytest.approx([h.score for h in multi.hits], abs=1e-5)


@pytest.mark.parametrize(
    "request_, words",
    [
        (pb.SearchRequest(text="x", mode=7), "mode 7 is not a SearchMode"),
        (pb.SearchRequest(text="x", combine=9), "combine 9 is not a Combine"),
        (pb.SearchRequest(text="x", mode=pb.SEARCH_MODE_FUSED, combine=pb.COMBINE_RRF), "needs mode SEARCH_MODE_MULTI_VECTOR"),
        (pb.SearchRequest(text="x", weights=pb.ChannelWeights(image=float("nan"))), "weights.image must be a finite number"),
        (pb.SearchRequest(image=png(5), weights=pb.ChannelWeights(image=0, title=0, caption=0, keyword=1)), "image-only query has no keyword"),
    ],
)
def test_unknown_enums_and_bad_weights_are_refused(gateway, catalog, request_, words):
    with pytest.raises(grpc.RpcError) as info:
        gateway.stub.Search(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in info.value.details()


# -- keyword channel (BM25 computed by Milvus) ------------------------------------------------------
KEYWORD_ONLY = pb.ChannelWeights(image=0, title=0, caption=0, keyword=1)
PIVOT, EXPONENT = Settings().keyword_pivot, Settings().keyword_exponent  # the session gateway runs the defaults


def saturated(bm25: float) -> float:
    """The documented keyword score, written again: b^e / (b^e + pivot^e)."""
    return bm25**EXPONENT / (bm25**EXPONENT + PIVOT**EXPONENT)


@pytest.mark.parametrize("query, expected", [
    ("ZX-4411B", "kw-1"),            # a model number, as typed
    ("zx 4411b", "kw-1"),            # case folding, split code
    ("quokka", "kw-1"),              # brand
    ("waterproofing", "kw-1"),       # stemming: waterproofing -> waterproof
    ("runners", "kw-1"),             # stemming: runners -> runner
    ("HIKING", "kw-1"),              # stemming + case: hiking -> hike
    ("cafe creme", "kw-2"),          # Unicode folding: café crème
    ("42", "kw-2"),                  # a size stays a token
    ("kw-2", "kw-2"),                # a product id
])
def test_keyword_terms_rank_their_product_first(gateway, sparse_products, query, expected):
    response = gateway.stub.Search(pb.SearchRequest(text=query, top_k=3, weights=KEYWORD_ONLY))
    assert ids(response)[:1] == [expected], (query, ids(response))
    best = response.hits[0].channel_scores
    assert best["bm25"] > 0 and best["keyword"] == pytest.approx(saturated(best["bm25"]), abs=1e-6)


def test_hybrid_keyword_and_vectors(gateway, catalog, sparse_products):
    text = "Quokka trail runner"
    weights = {"image": 0.3, "title": 0.3, "caption": 0.1, "keyword": 0.3}
    response = gateway.stub.Search(pb.SearchRequest(text=text, top_k=8, weights=pb.ChannelWeights(**weights)))
    # the keyword channel found kw-1 (its best BM25); how far that lifts it depends on the pivot (BM25 is small in
    # a catalog this size), so the order is checked against the formula below, not assumed
    assert max(response.hits, key=lambda h: h.channel_scores["bm25"]).product.id == "kw-1"
    assert [h.score for h in response.hits] == sorted((h.score for h in response.hits), reverse=True)
    query = embed_text(gateway.stub, text)
    for hit in response.hits:
        vectors = stored_vectors(gateway.stub, hit.product.id)
        have = [c for c in DENSE if c in vectors]
        total = sum(weights[c] for c in have) + weights["keyword"]
        keyword = saturated(hit.channel_scores["bm25"])
        assert hit.channel_scores["keyword"] == pytest.approx(keyword, abs=1e-6)
        expected = (sum(weights[c] * float(query @ vectors[c]) for c in have) + weights["keyword"] * keyword) / total
        assert hit.score == pytest.approx(expected, abs=1e-4)
    # filters still bind: the keyword's best match (brand quokka) is excluded by a brand filter
    filtered = gateway.stub.Search(pb.SearchRequest(text=text, top_k=8, weights=pb.ChannelWeights(**weights), filters=pb.Filters(brands=["acme"])))
    assert filtered.hits and {h.product.brand for h in filtered.hits} == {"acme"}


def test_keyword_rrf_and_delete_removes_from_the_keyword_channel(gateway, catalog):
    product = pb.Product(id="kw-gone", image=png(404), title="Zyzzyva lamp")
    assert gateway.stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=product)])).ok == 1
    rrf = gateway.stub.Search(pb.SearchRequest(
        text="zyzzyva", top_k=3, mode=pb.SEARCH_MODE_MULTI_VECTOR, combine=pb.COMBINE_RRF,
        weights=pb.ChannelWeights(image=0, title=0, caption=0, keyword=1)))
    assert ids(rrf)[:1] == ["kw-gone"]
    gateway.stub.DeleteProducts(pb.DeleteProductsRequest(ids=["kw-gone"]))
    after = gateway.stub.Search(pb.SearchRequest(text="zyzzyva", top_k=3, weights=KEYWORD_ONLY))
    assert "kw-gone" not in ids(after)


def test_tags_switch_and_query_type_weights_change_behaviour(gateway_repository, tmp_path):
    """`--tags false` stores no interrogator tags; `--composed-query-weights` decides a composed query's weights
    (and `--text-query-weights` a text query's), while the other types keep `weights`."""
    from tests.gateway_fixtures import start_gateway

    process = start_gateway(gateway_repository, str(tmp_path / "p.db"), tmp_path, "--tags", "false",
                            "--composed-query-weights", "image=1", "--text-query-weights", "title=1")
    try:
        stub = process.stub
        done = stub.UpsertProducts(iter([pb.UpsertProductsRequest(product=pb.Product(id="t-1", image=png(5), title="a thing"))]))
        assert done.ok == 1 and list(done.results[0].tags) == []
        composed = stub.Search(pb.SearchRequest(text="in red", image=png(5), top_k=1))
        assert composed.query_type == "composed" and composed.weights.image == pytest.approx(1.0)
        assert composed.mode == pb.SEARCH_MODE_FUSED  # the shipped fused vector is the image channel
        text = stub.Search(pb.SearchRequest(text="thing", top_k=1))
        assert text.query_type == "text" and text.weights.title == pytest.approx(1.0) and text.mode == pb.SEARCH_MODE_MULTI_VECTOR
        image = stub.Search(pb.SearchRequest(image=png(5), top_k=1))
        assert image.weights.image == pytest.approx(1.0) and image.mode == pb.SEARCH_MODE_FUSED
    finally:
        process.stop()
