"""Describe (BLIP caption + interrogator tags of an image) and Embed (raw CLIP vectors)."""
from __future__ import annotations

import asyncio

from gateway.core import Core
from gateway.errors import InvalidInput
from gateway.metrics import StageTimer
from gateway.validation import check_image, check_text, decode_checked
from preprocessing.image import is_grayscale
from retrieval.v1 import retrieval_pb2 as pb


async def describe(core: Core, request: pb.DescribeRequest, timer: StageTimer) -> pb.DescribeResponse:
    with timer.stage("preprocess"):
        if not request.image:
            raise InvalidInput("image is empty: Describe needs an image")
        image = check_image(request.image, core.settings)
        if request.max_tags < 0:
            raise InvalidInput(f"max_tags must be >= 0, got {request.max_tags}")
        tagger = core.require_tagger()
        # decoded once, off the event loop: the grayscale check, and CLIP and BLIP on a backend that takes it
        decoded = await asyncio.get_running_loop().run_in_executor(None, decode_checked, image, core.settings)
        grayscale = is_grayscale(decoded)
        if core.backend.accepts_decoded:
            image = decoded
    with timer.stage("inference"):
        vectors, captions = await asyncio.gather(
            core.guard_backend(core.backend.embed_images([image])), core.guard_backend(core.backend.caption([image]))
        )
    tags = tagger.tags(vectors, core.settings.tags_per_facet, [grayscale])[0]
    tags.sort(key=lambda t: -t.score)
    if request.max_tags:
        tags = tags[: request.max_tags]
    return pb.DescribeResponse(caption=captions[0], tags=[pb.Tag(term=t.term, facet=t.facet, score=t.score) for t in tags])


async def embed(core: Core, request: pb.EmbedRequest, timer: StageTimer) -> pb.EmbedResponse:
    settings = core.settings
    with timer.stage("preprocess"):
        if not request.texts and not request.images:
            raise InvalidInput("empty request: pass texts, images, or both")
        limit = settings.max_batch * 4
        if len(request.texts) > limit or len(request.images) > limit:
            raise InvalidInput(f"at most {limit} texts and {limit} images per Embed call")
        texts = [check_text(t, settings, f"texts[{i}]") for i, t in enumerate(request.texts)]
        for i, t in enumerate(texts):
            if not t.strip():
                raise InvalidInput(f"texts[{i}] is empty")
        images = [check_image(b, settings, f"images[{i}]", required=True) for i, b in enumerate(request.images)]
    with timer.stage("inference"):
        text_vecs, image_vecs = await asyncio.gather(
            core.guard_backend(core.backend.embed_texts(texts)), core.guard_backend(core.backend.embed_images(images))
        )
    response = pb.EmbedResponse(dim=core.backend.dim, model=core.backend.model)
    response.text_vectors.extend(pb.Vector(values=v.tolist()) for v in text_vecs)
    response.image_vectors.extend(pb.Vector(values=v.tolist()) for v in image_vecs)
    return response
