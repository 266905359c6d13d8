"""UpsertProducts: validate items, run the models in batches, fuse, and store; one result per item.

Items are processed in batches of `max_batch` as the stream arrives: image embeddings, title
embeddings, BLIP captions, interrogator tags and caption embeddings are each one backend call
per batch. An item is acknowledged OK only after the store's upsert returned (Milvus Lite has
then persisted it). A bad item is INVALID with a reason and does not stop the others. If the
backend or the store goes down, the RPC fails with UNAVAILABLE; items acknowledged before are
stored, and a retry is safe because upsert is idempotent by id.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np
from PIL import Image

from gateway import fusion
from gateway.core import Core
from gateway.errors import INVALID_INPUT_ERRORS, InvalidInput, LimitExceeded, Unavailable
from gateway.metrics import UPSERT_ITEMS, StageTimer
from gateway.rows import MAX_LENGTHS, Channels, build_row
from gateway.validation import check_id, check_tags_and_attributes, decode_checked
from preprocessing.image import is_grayscale
from retrieval.v1 import retrieval_pb2 as pb

MAX_TAGS = 64
MAX_ATTRIBUTES = 64
MAX_REASON_CHARS = 150  # UpsertResult.reason (see settings.UPSERT_RESULT_MAX_BYTES)


class StorePipeline:
    """Up to `depth` store upserts in flight while the next batch runs the models.

    A batch that shares an id with a batch in flight waits for it, so a later copy of an id still
    wins. Two concurrent upserts keep Milvus Lite's two cores busy (benchmarks/store_search.py:
    about 1.7x the rows/s of one at a time).
    """

    def __init__(self, depth: int = 2) -> None:
        self.depth = max(1, depth)
        self.pending: list[tuple[asyncio.Task, frozenset[str]]] = []

    async def submit(self, job, ids: frozenset[str]) -> None:
        try:
            while self.pending and (len(self.pending) >= self.depth or any(ids & other for _, other in self.pending)):
                task, _ = self.pending.pop(0)
                await task
        except BaseException:
            job.close()  # never started
            raise
        self.pending.append((asyncio.create_task(job), ids))

    async def drain(self) -> None:
        while self.pending:
            task, _ = self.pending.pop(0)
            await task

    async def settle(self) -> None:
        """Wait for the jobs in flight, ignoring their errors (used when the stream already failed)."""
        tasks, self.pending = [t for t, _ in self.pending], []
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Item:
    index: int
    product: pb.Product
    result: pb.UpsertResult
    grayscale: bool = False
    decoded: Any = None  # the PIL image validation decoded (reused by a backend that accepts it)


def validate_product(product: pb.Product, core: Core) -> tuple[Image.Image, bool]:
    """Raise InvalidInput naming the field; returns the decoded image (decoded once: validation,
    the grayscale check and, on the local backend, CLIP and BLIP all use it) and whether it is
    grayscale (then the interrogator names no colours)."""
    check_id(product.id, "product.id")
    if not product.image:
        raise InvalidInput("product.image is empty: every product needs an image")
    for name in ("title", "description", "category", "brand", "image_uri"):
        value = getattr(product, name)
        if len(value) > MAX_LENGTHS[name]:
            raise InvalidInput(f"product.{name} is {len(value)} characters; the limit is {MAX_LENGTHS[name]}")
    if product.HasField("price") and (not math.isfinite(product.price) or product.price < 0):
        raise InvalidInput(f"product.price must be a finite number >= 0, got {product.price}")
    if len(product.tags) > MAX_TAGS or len(product.attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"product has more than {MAX_TAGS} tags or {MAX_ATTRIBUTES} attributes")
    check_tags_and_attributes(product.tags, dict(product.attributes))
    image = decode_checked(product.image, core.settings, "product.image")
    return image, is_grayscale(image)


async def upsert_stream(core: Core, requests: AsyncIterator[pb.UpsertProductsRequest], timer: StageTimer) -> pb.UpsertProductsResponse:
    results: list[pb.UpsertResult] = []
    pipeline = StorePipeline(core.settings.store_concurrency)
    try:
        return await _upsert(core, requests, timer, results, pipeline)
    except Unavailable as exc:
        await pipeline.settle()  # so that the count of stored items is final
        stored = sum(1 for r in results if r.status == pb.ITEM_STATUS_OK)
        raise Unavailable(f"{exc} ({stored} earlier items were stored; resending them is safe)") from exc
    except BaseException:
        await pipeline.settle()
        raise


async def _upsert(
    core: Core, requests: AsyncIterator[pb.UpsertProductsRequest], timer: StageTimer, results: list, pipeline: StorePipeline
) -> pb.UpsertProductsResponse:
    batch: list[Item] = []
    index = 0
    limit = core.settings.max_upsert_items
    async for request in requests:
        if index >= limit:
            await process_batch(core, batch, timer, pipeline)
            await pipeline.drain()
            counts = _counts(results)
            raise LimitExceeded(
                f"the UpsertProducts stream has more than {limit} items (setting max_upsert_items): send at most {limit} per stream; "
                f"the first {limit} were processed (ok {counts.ok}, invalid {counts.invalid}, failed {counts.failed}) and resending them is safe"
            )
        product = request.product
        item = Item(index, product, pb.UpsertResult(id=product.id[: MAX_LENGTHS["id"]], index=index))
        index += 1
        results.append(item.result)
        if any(other.product.id == product.id for other in batch):
            await process_batch(core, batch, timer, pipeline)  # the later copy of an id wins
            batch = []
        batch.append(item)
        if len(batch) >= core.settings.max_batch:
            await process_batch(core, batch, timer, pipeline)
            batch = []
    await process_batch(core, batch, timer, pipeline)
    await pipeline.drain()
    return bounded_response(results, core.settings.max_message_bytes * 3 // 4)


def _counts(results: list[pb.UpsertResult]) -> pb.UpsertProductsResponse:
    response = pb.UpsertProductsResponse()
    for result in results:
        if result.status == pb.ITEM_STATUS_OK:
            response.ok += 1
        elif result.status == pb.ITEM_STATUS_INVALID:
            response.invalid += 1
        else:
            response.failed += 1
    return response


def bounded_response(results: list[pb.UpsertResult], budget: int) -> pb.UpsertProductsResponse:
    """One result per item, within `budget` bytes: reasons are cut to MAX_REASON_CHARS, and once the
    budget is reached the remaining OK results leave out caption and tags (counted in details_omitted).

    Without caption and tags a result is at most UPSERT_RESULT_MAX_BYTES, and settings check that
    max_upsert_items of those fit the budget, so the response never exceeds the message limit.
    """
    response = _counts(results)
    size = 0
    for result in results:
        if len(result.reason) > MAX_REASON_CHARS:
            result.reason = result.reason[: MAX_REASON_CHARS - 3] + "..."
        entry = result.ByteSize() + 4  # field tag and length prefix
        if size + entry > budget and (result.caption or result.tags):
            result.caption = ""
            del result.tags[:]
            response.details_omitted += 1
            entry = result.ByteSize() + 4
        size += entry
        response.results.append(result)  # a copy: the results were filled in place above
    return response


async def _validate(core: Core, batch: list[Item], timer: StageTimer) -> list[Item]:
    good = []
    with timer.stage("preprocess"):
        loop = asyncio.get_running_loop()
        checks = await asyncio.gather(
            *(loop.run_in_executor(None, validate_product, item.product, core) for item in batch), return_exceptions=True
        )
    for item, outcome in zip(batch, checks):
        if isinstance(outcome, tuple):
            item.decoded, item.grayscale = outcome
            good.append(item)
        elif isinstance(outcome, INVALID_INPUT_ERRORS):
            item.result.status, item.result.reason = pb.ITEM_STATUS_INVALID, str(outcome)
            UPSERT_ITEMS.labels("invalid").inc()
        else:
            raise outcome
    return good


async def _embed_some(core: Core, texts: list[str]) -> list[np.ndarray | None]:
    """CLIP vectors of the non-empty texts; None where a text is empty (that channel is absent)."""
    wanted = [i for i, t in enumerate(texts) if t]
    vectors = await core.guard_backend(core.backend.embed_texts([texts[i] for i in wanted])) if wanted else []
    out: list[np.ndarray | None] = [None] * len(texts)
    for i, vec in zip(wanted, vectors):
        out[i] = vec
    return out


async def process_batch(core: Core, batch: list[Item], timer: StageTimer, pipeline: StorePipeline) -> None:
    """Validate and run the models for one batch, then hand the rows to the store pipeline."""
    if not batch:
        return
    items = await _validate(core, batch, timer)
    if not items:
        return
    settings = core.settings
    store = core.require_store()  # fail fast (UNAVAILABLE) before spending inference on the batch
    tagger = core.require_tagger()
    products = [item.product for item in items]
    with timer.stage("inference"):
        images = [item.decoded for item in items] if core.backend.accepts_decoded else [p.image for p in products]
        image_vecs, title_vecs, captions = await asyncio.gather(
            core.guard_backend(core.backend.embed_images(images)),
            _embed_some(core, [fusion.title_text(p.title, p.description) for p in products]),
            core.guard_backend(core.backend.caption(images)),
        )
        if settings.tags:
            tag_lists = tagger.tags(image_vecs, settings.tags_per_facet, [item.grayscale for item in items])
        else:
            tag_lists = [[] for _ in items]
        all_tags = [_merge_tags([t.term for t in tags], list(p.tags)) for tags, p in zip(tag_lists, products)]
        caption_vecs = await _embed_some(core, [fusion.caption_text(c, t) for c, t in zip(captions, all_tags)])
    with timer.stage("preprocess"):
        channels = []
        for i in range(len(products)):
            vectors = {"image": image_vecs[i]}
            if title_vecs[i] is not None:
                vectors["title"] = title_vecs[i]
            if caption_vecs[i] is not None:
                vectors["caption"] = caption_vecs[i]
            channels.append(Channels(vectors, captions[i], all_tags[i]))
        fused = fusion.fused_vectors(
            {c: np.stack([ch.vectors.get(c, np.zeros(store.dim, np.float32)) for ch in channels]) for c in fusion.DENSE_CHANNELS},
            [set(ch.vectors) for ch in channels],
            store.fused_weights or fusion.dense_part(settings.weights.as_dict()),
        )
        rows = [build_row(p, ch, fused[i], store.dim) for i, (p, ch) in enumerate(zip(products, channels))]
    await pipeline.submit(_store_batch(core, rows, items, captions, all_tags, timer), frozenset(p.id for p in products))


async def _store_batch(core: Core, rows: list[dict], items: list[Item], captions: list[str], all_tags: list[list[str]], timer: StageTimer) -> None:
    """Upsert one batch; only after the store returned are its items acknowledged OK."""
    store = core.require_store()
    with timer.stage("store"):
        try:
            await core.guard_store(store.upsert, rows)
        except (Unavailable, *INVALID_INPUT_ERRORS):
            raise
        except Exception as exc:  # noqa: BLE001 - the store refused this batch: report it per item
            for item in items:
                item.result.status, item.result.reason = pb.ITEM_STATUS_FAILED, f"store rejected the batch: {exc}"
            UPSERT_ITEMS.labels("failed").inc(len(items))
            return
    for item, caption, tags in zip(items, captions, all_tags):
        item.result.status = pb.ITEM_STATUS_OK
        item.result.caption = caption
        item.result.tags.extend(tags)
    UPSERT_ITEMS.labels("ok").inc(len(items))


def _merge_tags(model_tags: list[str], seller_tags: list[str]) -> list[str]:
    seen, out = set(), []
    for tag in [*model_tags, *seller_tags]:
        tag = tag.strip()
        if tag and tag not in seen:
            seen.add(tag)
            out.append(tag)
    return out
