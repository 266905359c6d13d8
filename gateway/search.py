"""Search: validate, embed the query, search the store in the asked mode, score channels, rerank.

Query vector: CLIP text and/or image embedding, composed as in gateway/fusion.py. `fused` mode
searches the fused vector; `multi_vector` searches each channel and combines (weighted in the
store with hybrid_search + WeightedRanker; RRF in the store with RRFRanker when the channel
weights are equal, else weighted RRF here from the per-channel lists). Every hit carries the
exact cosine of the query to each channel vector and to the fused vector.
"""
from __future__ import annotations

import asyncio

import numpy as np

from gateway import fusion
from gateway.core import Core
from gateway.errors import InvalidInput, NotSupported
from gateway.filters import ProductFilter
from gateway.metrics import StageTimer
from gateway.records import record_of
from gateway.store import StoreHit, vectors_of
from gateway.validation import check_image, check_text, check_top_k
from retrieval.v1 import retrieval_pb2 as pb


def request_weights(request: pb.SearchRequest, core: Core) -> dict[str, float]:
    weights = core.settings.weights.as_dict()
    for channel in fusion.CHANNELS:
        if request.HasField("weights") and request.weights.HasField(channel):
            weights[channel] = getattr(request.weights, channel)
    try:
        return fusion.check_weights(weights)
    except fusion.FusionError as exc:
        raise InvalidInput(f"weights: {exc}") from None


async def embed_query(core: Core, text: str, image: bytes, text_weight: float) -> np.ndarray:
    jobs = []
    if image:
        jobs.append(core.guard_backend(core.backend.embed_images([image])))
    if text:
        jobs.append(core.guard_backend(core.backend.embed_texts([text])))
    vectors = await asyncio.gather(*jobs)
    image_vec = vectors[0][0] if image else None
    text_vec = vectors[-1][0] if text else None
    return fusion.compose_query(image_vec, text_vec, text_weight)


async def search(core: Core, request: pb.SearchRequest, timer: StageTimer) -> pb.SearchResponse:
    settings = core.settings
    with timer.stage("preprocess"):
        text = check_text(request.text, settings, "text").strip()
        image = check_image(request.image, settings, "image")
        if not text and not image:
            raise InvalidInput("empty query: set text, image, or both")
        top_k = check_top_k(request.top_k, settings)
        weights = request_weights(request, core)
        flt = ProductFilter.from_proto(request.filters)
        flt.validate(settings.filterable_attributes, settings.max_filter_values)
        flt.expression()  # fail early on bad values
        mode = request.mode or pb.SEARCH_MODE_FUSED
        combine = "rrf" if request.combine == pb.COMBINE_RRF else "weighted"
        rrf_k = request.rrf_k or settings.rrf_k
        if rrf_k < 1:
            raise InvalidInput(f"rrf_k must be >= 1, got {rrf_k}")
        text_weight = request.text_weight if request.HasField("text_weight") else settings.text_weight
        if not 0.0 <= text_weight <= 1.0:
            raise InvalidInput(f"text_weight must be in [0, 1], got {text_weight}")
        if request.rerank:
            if not core.backend.has_itm:
                raise NotSupported("rerank needs a BLIP ITM model, and this deployment has none")
            if not image:
                raise InvalidInput("rerank scores the query image against each hit's text: send an image")
        store = core.require_store()
    with timer.stage("inference"):
        query = await embed_query(core, text, image, text_weight)
    with timer.stage("store"):
        if mode == pb.SEARCH_MODE_FUSED:
            hits, _ = await core.guard_store(store.search, query, top_k, flt)
        elif combine == "rrf" and len({w for w in weights.values() if w > 0}) > 1:
            hits = await weighted_rrf(core, query, weights, rrf_k, top_k, flt)
        else:
            hits = await core.guard_store(store.multi_search, query, weights, combine, rrf_k, top_k, flt)
    with timer.stage("preprocess"):
        # fused mode ranks by the stored fused vector, built with the ingest weights
        used = settings.weights.as_dict() if mode == pb.SEARCH_MODE_FUSED else weights
        response = pb.SearchResponse(mode=mode, weights=pb.ChannelWeights(**used))
        for hit in hits:
            scores = fusion.channel_scores(query, vectors_of(hit.row))
            score = hit.score
            if mode == pb.SEARCH_MODE_MULTI_VECTOR and combine == "weighted":
                score = fusion.weighted_score(scores, weights)  # exact, even for channels the ANN missed
            response.hits.append(pb.Hit(product=record_of(hit.row), score=score, channel_scores=scores))
        if mode == pb.SEARCH_MODE_MULTI_VECTOR and combine == "weighted":
            ordered = sorted(response.hits, key=lambda h: -h.score)
            del response.hits[:]
            response.hits.extend(ordered)
    if request.rerank and response.hits:
        with timer.stage("inference"):
            texts = [fusion.caption_text(h.product.title, [h.product.caption]) or h.product.id for h in response.hits]
            itm = await core.guard_backend(core.backend.itm(image, texts))
        ordered = []
        for hit, value in zip(response.hits, itm):
            hit.rerank_score = float(value)
            hit.score = float(value)
            ordered.append(hit)
        ordered.sort(key=lambda h: -h.score)
        del response.hits[:]
        response.hits.extend(ordered)
    return response


async def weighted_rrf(core: Core, query: np.ndarray, weights: dict[str, float], rrf_k: int, top_k: int, flt: ProductFilter) -> list[StoreHit]:
    """RRF with per-channel weights (Milvus' RRFRanker has none): one search per channel, fused here."""
    store = core.require_store()
    channels = [c for c in fusion.CHANNELS if weights[c] > 0]
    lists = await asyncio.gather(*(core.guard_store(store.channel_search, query, c, top_k, flt) for c in channels))
    rows = {hit.id: hit.row for hits in lists for hit in hits}
    scores = fusion.rrf_scores({c: [h.id for h in hits] for c, hits in zip(channels, lists)}, weights, rrf_k)
    return [StoreHit(item, score, rows[item]) for item, score in list(scores.items())[:top_k]]
