"""Search: validate, embed the query, gather candidates, score them exactly, rerank.

Every weighted hit's score is the formula of gateway/fusion.py, sum_{c in P} w_c s_c / sum_{c in P}
w_c, with the weights really used (the query type's defaults, overridden field by field by the
request, normalized to sum 1; an image-only query has no words, so its keyword weight is 0):

- `fused` plan: when the dense part of those weights equals the weights the stored fused vectors
  were built with, one inner-product ANN search of the fused vector ranks by exactly that score.
  With a keyword weight: the fused ANN list and the BM25 list, then only the candidates whose score
  bounds can still reach the top_k, read and scored exactly (Candidates._fused_hybrid).
- otherwise, and for `multi_vector`: each weighted channel's top `multi_vector_candidates`
  (dense ANN per channel, BM25 for the keyword channel), the union rescored exactly, cut to top_k.
  A request for fused mode whose weights differ from the stored ones is answered this way, and
  the response says so (mode MULTI_VECTOR, the weights used).
- `rrf`: weighted reciprocal rank fusion of the same per-channel lists.
- a filter on at most EXACT_ID_LIMIT ids: those rows, scored exactly (no ANN).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway import fusion
from gateway.core import Core
from gateway.errors import InvalidInput, NotSupported
from gateway.filters import ProductFilter
from gateway.metrics import StageTimer
from gateway.rows import (
    CHANNEL_BITS, CHANNEL_MASK_FIELD, FUSED_FIELD, VECTOR_FIELD, channels_of, dense_vectors, present_channels, record_of,
)
from gateway.store import EXACT_ID_LIMIT, MAX_LIMIT, MilvusStore
from gateway.validation import check_image, check_text, check_top_k
from retrieval.v1 import retrieval_pb2 as pb

MODES = {pb.SEARCH_MODE_UNSPECIFIED, pb.SEARCH_MODE_FUSED, pb.SEARCH_MODE_MULTI_VECTOR}
BOUNDED_ROWS_MAX = 64  # rows read with their vectors in a bounded hybrid search; more: per-list rescoring
COMBINES = {pb.COMBINE_UNSPECIFIED: "weighted", pb.COMBINE_WEIGHTED: "weighted", pb.COMBINE_RRF: "rrf"}


def query_type(text: str, image: bytes) -> str:
    return "composed" if text and image else ("image" if image else "text")


def request_weights(request: pb.SearchRequest, core: Core, qtype: str) -> dict[str, float]:
    """The query type's default weights, overridden by the request's fields, normalized to sum 1."""
    weights = core.settings.query_weights(qtype)
    if request.HasField("weights"):
        for channel in fusion.CHANNELS:
            if request.weights.HasField(channel):
                weights[channel] = getattr(request.weights, channel)
    for channel, value in weights.items():
        if not np.isfinite(value) or value < 0:
            raise InvalidInput(f"weights.{channel} must be a finite number >= 0, got {value}")
    if qtype == "image":
        weights[fusion.KEYWORD] = 0.0  # no words to match
    if sum(weights.values()) <= 0:
        what = "an image-only query has no keyword channel, and the other weights are 0" if qtype == "image" else "they are all 0"
        raise InvalidInput(f"weights: at least one channel weight must be > 0 ({what})")
    return fusion.check_weights(weights)


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


@dataclass
class Plan:
    mode: int  # the mode really used
    combine: str  # weighted | rrf
    weights: dict[str, float]
    query_type: str


def choose_plan(request: pb.SearchRequest, weights: dict[str, float], qtype: str, store: MilvusStore) -> Plan:
    if request.mode not in MODES:
        raise InvalidInput(f"mode {request.mode} is not a SearchMode: use SEARCH_MODE_FUSED or SEARCH_MODE_MULTI_VECTOR")
    if request.combine not in COMBINES:
        raise InvalidInput(f"combine {request.combine} is not a Combine: use COMBINE_WEIGHTED or COMBINE_RRF")
    combine = COMBINES[request.combine]
    if combine == "rrf":
        if request.mode == pb.SEARCH_MODE_FUSED:
            raise InvalidInput("combine RRF fuses per-channel rank lists: it needs mode SEARCH_MODE_MULTI_VECTOR")
        return Plan(pb.SEARCH_MODE_MULTI_VECTOR, combine, weights, qtype)
    if request.mode != pb.SEARCH_MODE_MULTI_VECTOR:
        dense = fusion.dense_part(weights)
        stored = store.fused_weights
        if dense is not None and stored and fusion.same_weights(dense, stored):
            return Plan(pb.SEARCH_MODE_FUSED, combine, weights, qtype)
    return Plan(pb.SEARCH_MODE_MULTI_VECTOR, combine, weights, qtype)


async def search(core: Core, request: pb.SearchRequest, timer: StageTimer) -> pb.SearchResponse:
    settings = core.settings
    with timer.stage("preprocess"):
        text = check_text(request.text, settings, "text").strip()
        image = check_image(request.image, settings, "image")
        if not text and not image:
            raise InvalidInput("empty query: set text, image, or both")
        top_k = check_top_k(request.top_k, settings)
        qtype = query_type(text, image)
        weights = request_weights(request, core, qtype)
        flt = ProductFilter.from_proto(request.filters)
        flt.validate(settings.filterable_attributes, settings.max_filter_values)
        flt.expression()  # fail early on bad values
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
        plan = choose_plan(request, weights, qtype, store)
    with timer.stage("inference"):
        query = await embed_query(core, text, image, text_weight)
    with timer.stage("store"):
        scored = await Candidates(core, store, query, text, plan, flt, top_k, rrf_k).run()
    response = pb.SearchResponse(
        mode=plan.mode, weights=pb.ChannelWeights(**weights), query_type=qtype,
        combine=pb.COMBINE_RRF if plan.combine == "rrf" else pb.COMBINE_WEIGHTED,
    )
    for row, score, channel_scores in scored:
        response.hits.append(pb.Hit(product=record_of(row), score=score, channel_scores=channel_scores))
    if request.rerank and response.hits:
        with timer.stage("inference"):
            await rerank(core, image, response)
    return response


class Candidates:
    """Candidate gathering and exact scoring for one search (see the module docstring).

    Scores of candidates come from the store as inner products (each channel's ANN list gives them
    for its own candidates; a search restricted to the other candidates' ids gives the rest, exact),
    so only the top_k rows are read back with their vectors (for records and channel scores)."""

    def __init__(
        self, core: Core, store: MilvusStore, query: np.ndarray, text: str, plan: Plan, flt: ProductFilter, top_k: int, rrf_k: int
    ) -> None:
        self.core, self.store, self.query, self.text = core, store, np.asarray(query, np.float32), text
        self.plan, self.flt, self.top_k, self.rrf_k = plan, flt, top_k, rrf_k
        self.weights = plan.weights
        self.depth = max(core.settings.multi_vector_candidates, top_k)
        self.keyword_on = self.weights.get(fusion.KEYWORD, 0.0) > 0 and bool(text)
        self.keyword_pairs: list[tuple[str, float, int]] = []  # the query's BM25 list (id, bm25, mask), best first
        fused = plan.mode == pb.SEARCH_MODE_FUSED
        # the dense "fields" scored: the fused vector (its score is the whole dense part) or each weighted channel
        self.dense = {fusion.FUSED: FUSED_FIELD} if fused else {c: VECTOR_FIELD[c] for c in fusion.DENSE_CHANNELS if self.weights[c] > 0}

    def _store(self, fn, *args):
        return self.core.guard_store(fn, *args)

    async def run(self) -> list[tuple[dict[str, Any], float, dict[str, float]]]:
        if self.flt.ids and len(self.flt.ids) <= EXACT_ID_LIMIT:
            rows = await self._store(self.store.query, self.flt.expression(), self.store.fields(vectors=True))
            self.keyword_pairs = await self._keyword_list() if self.keyword_on else []
            bm25 = await self._keyword_bm25([r["id"] for r in rows])
            return self._top([(row, self._row_scores(row, bm25)) for row in rows])
        if self.plan.combine == "rrf":
            return await self._rrf()
        if self.plan.mode == pb.SEARCH_MODE_FUSED and not self.keyword_on:
            hits = await self._store(self.store.ann, self.query, FUSED_FIELD, self.top_k, self.flt, self.store.fields(vectors=True))
            return self._top([(row, self._row_scores(row, {})) for _, _, row in hits])
        if self.plan.mode == pb.SEARCH_MODE_FUSED:
            return await self._fused_hybrid()
        return await self._rescore(await self._channel_lists())

    async def _rescore(self, lists: dict[str, dict[str, tuple[float, int]]]) -> list[tuple[dict[str, Any], float, dict[str, float]]]:
        """The union of the candidate lists, every score completed exactly, the top_k read with their vectors."""
        union = list(dict.fromkeys(i for hits in lists.values() for i in hits))
        (scores, masks), bm25 = await asyncio.gather(self._complete(lists, union), self._keyword_bm25(union))
        ranked = []
        for item in union:
            channel_scores = dict(scores[item])
            if self.keyword_on:
                channel_scores[fusion.KEYWORD] = self._keyword_score(bm25.get(item, 0.0))
            score = self._score(channel_scores, masks.get(item))
            if score is not None:
                ranked.append((item, score))
        ranked.sort(key=lambda pair: (-pair[1], pair[0]))
        top = ranked[: self.top_k]
        rows = await self._read_rows([i for i, _ in top])
        return [(rows[i], score, self._row_scores(rows[i], bm25)) for i, score in top if i in rows]

    async def _keyword_list(self) -> list[tuple[str, float, int]]:
        return await self._store(self.store.keyword, self.text, self.depth, self.flt)

    async def _fused_hybrid(self) -> list[tuple[dict[str, Any], float, dict[str, float]]]:
        """The fused plan with a keyword weight in two rounds of store calls (each call costs ~1.5 ms or more on
        Milvus Lite): the fused ANN list and the BM25 list; then, read with their vectors, only the candidates
        that can still reach the top_k (with the BM25 of those a full BM25 list left out), scored exactly here.

        Bounds: a candidate missing from a full ANN list has q . u <= the list's last score (and >= -1); one
        missing from a full BM25 list has BM25 <= the list's last (and >= 0), from a shorter list 0 exactly.
        A candidate whose upper bound is below the k-th best lower bound cannot be in the top_k. When more than
        BOUNDED_ROWS_MAX candidates remain, the two lists are rescored as in multi_vector mode instead."""
        ann, keyword = await asyncio.gather(
            self._store(self.store.ann, self.query, FUSED_FIELD, self.depth, self.flt, ["id", CHANNEL_MASK_FIELD]), self._keyword_list())
        self.keyword_pairs = keyword
        dense = {i: d for i, d, _ in ann}
        masks = {i: int(row.get(CHANNEL_MASK_FIELD, 0)) for i, _, row in ann} | {i: m for i, _, m in keyword}
        bm25 = {i: b for i, b, _ in keyword}
        dense_floor = ann[-1][1] if len(ann) >= min(self.depth, MAX_LIMIT) else None  # None: an unlisted product is unknown
        keyword_full = len(keyword) >= self.depth
        keyword_ceiling = self._keyword_score(keyword[-1][1]) if keyword_full else 0.0
        bounds = {}
        for item, mask in masks.items():
            alpha = self._dense_share(mask)
            if alpha is None:
                continue  # no channel of positive weight: no score
            d_low, d_high = (dense[item], dense[item]) if item in dense else (-1.0, np.inf if dense_floor is None else dense_floor)
            k_low, k_high = (self._keyword_score(bm25.get(item, 0.0)),) * 2 if item in bm25 or not keyword_full else (0.0, keyword_ceiling)
            bounds[item] = (alpha * d_low + (1 - alpha) * k_low, alpha * d_high + (1 - alpha) * k_high)
        lows = sorted((low for low, _ in bounds.values()), reverse=True)
        threshold = lows[self.top_k - 1] if len(lows) >= self.top_k else -np.inf
        alive = sorted(i for i, (_, high) in bounds.items() if high >= threshold - 1e-6)
        if len(alive) > BOUNDED_ROWS_MAX:
            return await self._rescore({fusion.FUSED: {i: (d, masks[i]) for i, d, _ in ann}, fusion.KEYWORD: {i: (b, m) for i, b, m in keyword}})
        unknown = [i for i in alive if keyword_full and i not in bm25]
        read = self._read_rows(alive)
        if unknown:
            rows, extra = await asyncio.gather(read, self._store(self.store.keyword, self.text, len(unknown), self.flt, unknown))
            bm25.update({i: b for i, b, _ in extra})
        else:
            rows = await read
        scored = []
        for row in rows.values():
            exact = self._row_scores(row, bm25)  # the fused and keyword scores it holds are this search's, exactly
            score = self._score(exact, int(row[CHANNEL_MASK_FIELD]))
            if score is not None:
                scored.append((row, score, exact))
        scored.sort(key=lambda hit: (-hit[1], hit[0]["id"]))
        return scored[: self.top_k]

    async def _read_rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """id -> stored row with its vectors (one search restricted to the ids; a query by id for any it left out)."""
        found = {i: row for i, (_, row) in (await self._store(self.store.rows_within, self.query, FUSED_FIELD, ids, self.store.fields(vectors=True))).items()}
        lost = [i for i in ids if i not in found]
        if lost:
            found.update({r["id"]: r for r in await self._store(self.store.get, lost, True)})
        return found

    def _dense_share(self, mask: int) -> float | None:
        """The fused score's share of a product's score (the rest is the keyword score's); None: no weighted channel."""
        present = channels_of(mask)
        dense_weight = sum(self.weights[c] for c in fusion.DENSE_CHANNELS if c in present)
        keyword_weight = self.weights[fusion.KEYWORD] if self.keyword_on and fusion.KEYWORD in present else 0.0
        total = dense_weight + keyword_weight
        return dense_weight / total if total > 0 else None

    async def _channel_lists(self) -> dict[str, dict[str, tuple[float, int]]]:
        """Each scored field's candidates: id -> (inner product, channel mask), best first; keyword: id -> (bm25, channel mask)."""
        names = list(self.dense)
        jobs = [self._store(self.store.ann, self.query, self.dense[n], self.depth, self.flt, ["id", CHANNEL_MASK_FIELD]) for n in names]
        if self.keyword_on:
            jobs.append(self._keyword_list())
        results = await asyncio.gather(*jobs)
        lists = {n: {i: (d, int(row.get(CHANNEL_MASK_FIELD, 0))) for i, d, row in hits} for n, hits in zip(names, results)}
        if self.keyword_on:
            self.keyword_pairs = results[-1]
            lists[fusion.KEYWORD] = {i: (b, m) for i, b, m in self.keyword_pairs}
        return lists

    async def _complete(self, lists, union: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
        """Every candidate's score on every scored dense field, and its channel mask."""
        scores: dict[str, dict[str, float]] = {i: {} for i in union}
        masks: dict[str, int] = {}
        missing = {n: [i for i in union if i not in lists[n]] for n in self.dense}
        found = await asyncio.gather(*(self._store(self.store.within, self.query, self.dense[n], missing[n]) for n in self.dense))
        for n, extra in zip(self.dense, found):
            for i, (d, mask) in {**lists[n], **extra}.items():
                scores[i][n] = d
                masks[i] = mask
        lost = [i for i in union if any(n not in scores[i] for n in self.dense)]
        if lost:  # not returned by a restricted search (should not happen): read their vectors
            for row in await self._store(self.store.get, lost, True):
                scores[row["id"]].update({n: v for n, v in self._row_scores(row, {}).items() if n in self.dense})
                masks[row["id"]] = int(row[CHANNEL_MASK_FIELD])
        for i in union:
            masks.setdefault(i, CHANNEL_BITS[fusion.KEYWORD])  # keyword-only candidates with no dense field scored
        return scores, masks

    def _score(self, channel_scores: dict[str, float], mask: int | None) -> float | None:
        """The formula; with the fused field standing for the dense part (its score already is the
        renormalized dense weighted sum), the dense part weighs sum_{c in P, dense} w_c."""
        if fusion.FUSED not in channel_scores:
            return fusion.weighted_score(channel_scores, channels_of(mask or 0), self.weights)
        share = self._dense_share(mask or 0)
        if share is None:
            return None
        return share * channel_scores[fusion.FUSED] + (1 - share) * channel_scores.get(fusion.KEYWORD, 0.0)

    def _keyword_score(self, bm25: float) -> float:
        return fusion.keyword_score(bm25, self.core.settings.keyword_pivot, self.core.settings.keyword_exponent)

    def _row_scores(self, row: dict[str, Any], bm25: dict[str, float]) -> dict[str, float]:
        scores = {c: float(np.dot(self.query, v)) for c, v in dense_vectors(row).items()}
        scores[fusion.FUSED] = float(np.dot(self.query, np.asarray(row[FUSED_FIELD], np.float32)))
        if self.keyword_on:
            scores[fusion.KEYWORD] = self._keyword_score(bm25.get(row["id"], 0.0))
            scores[fusion.BM25] = bm25.get(row["id"], 0.0)
        return scores

    def _top(self, scored_rows):
        out = []
        for row, scores in scored_rows:
            dense_only = {k: v for k, v in scores.items() if k != fusion.FUSED}
            score = fusion.weighted_score(dense_only, present_channels(row), self.weights)
            if score is not None:
                out.append((row, score, scores))
        out.sort(key=lambda item: (-item[1], item[0]["id"]))
        return out[: self.top_k]

    async def _keyword_bm25(self, ids: list[str]) -> dict[str, float]:
        """BM25 of every candidate (exact: a BM25 search restricted to the candidates)."""
        if not self.keyword_on or not ids:
            return {}
        known = {i: b for i, b, _ in self.keyword_pairs}
        missing = [i for i in ids if i not in known]
        # A list shorter than asked holds every product that matches a query term: the others score 0, exactly,
        # and need no restricted BM25 search (one store call less, e.g. for a SKU that one product carries).
        if missing and len(self.keyword_pairs) >= self.depth:
            known.update({i: b for i, b, _ in await self._store(self.store.keyword, self.text, len(missing), self.flt, missing)})
        return {i: known.get(i, 0.0) for i in ids}

    async def _rrf(self):
        lists = await self._channel_lists()
        fused = fusion.rrf_scores({n: list(hits) for n, hits in lists.items()}, self.weights, self.rrf_k)
        top = list(fused)[: self.top_k]
        rows, bm25 = await asyncio.gather(self._read_rows(top), self._keyword_bm25(top))
        return [(rows[i], fused[i], self._row_scores(rows[i], bm25)) for i in top if i in rows]


async def rerank(core: Core, image: bytes, response: pb.SearchResponse) -> None:
    """Re-score hits with BLIP ITM against their text (title, description, caption); hits without any
    text cannot be matched, keep their score and go after the matched ones."""
    texts = [fusion.title_text(fusion.title_text(h.product.title, h.product.description), h.product.caption) for h in response.hits]
    matched = [i for i, t in enumerate(texts) if t]
    values = await core.guard_backend(core.backend.itm(image, [texts[i] for i in matched])) if matched else []
    for i, value in zip(matched, values):
        response.hits[i].rerank_score = float(value)
        response.hits[i].score = float(value)
    ordered = sorted(response.hits, key=lambda h: (not h.HasField("rerank_score"), -h.score))
    del response.hits[:]
    response.hits.extend(ordered)
