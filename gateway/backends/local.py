"""ONNX Runtime in-process on the exported repository: the embedded default backend.

Graph calls run in a small thread pool so the event loop keeps serving while a batch runs
(ONNX Runtime releases the GIL inside `run`). CLIP embeddings go through one micro-batcher per
tower (gateway/batching.py): each caller decodes/tokenizes its own items in the preprocessing
pool (so a bad image fails only its caller), then concurrent callers share one graph call.
`batch_max_size` 1 turns that off: every call then runs on its own, as before batching existed.

Images may be passed as bytes or as already decoded RGB PIL images, so a caller that decoded an
image once (ingest's validation) need not pay for decoding again here.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, Union

import numpy as np
from PIL import Image

from gateway.batching import MicroBatcher
from preprocessing.image import ImageLimits, decode_image, preprocess_images
from runtime.clip import ClipEncoder
from runtime.sessions import resolve_engine
from runtime.manifest import Manifest

log = logging.getLogger("gateway.backends.local")

ImageInput = Union[bytes, Image.Image]


class LocalBackend:
    name = "local"
    accepts_decoded = True  # embed_images / caption take decoded PIL images too

    def __init__(self, settings) -> None:
        self.settings = settings
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes)
        self._pool = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="ort")
        self._prep_pool = ThreadPoolExecutor(max_workers=settings.preprocess_threads, thread_name_prefix="prep")
        self._image_batcher: MicroBatcher | None = None
        self._text_batcher: MicroBatcher | None = None
        self.clip: ClipEncoder | None = None
        self.captioner = None
        self.itm_scorer = None
        self.dim = 0
        self.model = ""

    @property
    def has_captioner(self) -> bool:
        return self.captioner is not None

    @property
    def has_itm(self) -> bool:
        return self.itm_scorer is not None

    def _load(self) -> None:
        manifest = Manifest.load(self.settings.model_repository)
        variant = self.settings.model_variant
        threads = max(1, self.settings.inference_threads)
        self.engine = resolve_engine(self.settings.engine)
        self.clip = ClipEncoder(manifest, variant=variant, intra_op_threads=threads, image_limits=self.limits, engine=self.engine)
        self.dim, self.model = manifest.embed_dim, str(manifest.clip.get("arch", ""))
        size, delay = self.settings.batch_max_size, self.settings.batch_max_delay_ms / 1000
        if size > 1:
            self._image_batcher = MicroBatcher("clip_image", self.clip.embed_pixels, self._pool, size, delay)
            self._text_batcher = MicroBatcher("clip_text", self.clip.embed_token_ids, self._pool, size, delay)
        if manifest.blip and self.settings.caption:
            from runtime.caption import BlipCaptioner

            self.captioner = BlipCaptioner(manifest, variant="fp32", intra_op_threads=threads)
            try:
                from runtime.itm import BlipItmScorer

                self.itm_scorer = BlipItmScorer(manifest, variant="fp32", intra_op_threads=threads)
            except Exception as exc:  # noqa: BLE001 - ITM is optional
                log.info("no ITM scorer: %s", exc)
        log.info("local backend: %s %s on %s (dim %d), captioner %s, itm %s", self.model, variant, self.engine, self.dim, self.has_captioner, self.has_itm)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self) -> None:
        await self._run(self._load)

    async def ping(self) -> bool:
        return self.clip is not None

    def _decode(self, image: ImageInput) -> Image.Image:
        return image if isinstance(image, Image.Image) else decode_image(image, self.limits)

    def _clip_pixels(self, images: Sequence[ImageInput]) -> np.ndarray:
        return preprocess_images([self._decode(image) for image in images], self.clip.image_spec)

    async def _prep(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._prep_pool, fn, *args)

    async def embed_images(self, blobs: Sequence[ImageInput]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), np.float32)
        if self._image_batcher is None:
            return await self._run(lambda: self.clip.embed_pixels(self._clip_pixels(list(blobs))))
        return await self._image_batcher.submit(await self._prep(self._clip_pixels, list(blobs)))

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._text_batcher is None:
            return await self._run(self.clip.embed_texts, list(texts))
        # a query's few words tokenize in microseconds: a thread hop would cost more
        ids = self.clip.tokenizer(list(texts)) if len(texts) <= 4 else await self._prep(self.clip.tokenizer, list(texts))
        return await self._text_batcher.submit(ids)

    def _caption_sync(self, blobs: Sequence[ImageInput]) -> list[str]:
        images = [self._decode(blob) for blob in blobs]
        return self.captioner.caption(preprocess_images(images, self.captioner.image_spec))

    async def caption(self, blobs: Sequence[ImageInput]) -> list[str]:
        if not blobs:
            return []
        if self.captioner is None:
            return ["" for _ in blobs]
        return await self._run(self._caption_sync, list(blobs))

    def _itm_sync(self, image: bytes, texts: Sequence[str]) -> np.ndarray:
        pixels = preprocess_images([decode_image(image, self.limits)], self.itm_scorer.image_spec)
        return self.itm_scorer.score_texts(pixels, list(texts))

    async def itm(self, image: bytes, texts: Sequence[str]) -> np.ndarray:
        return await self._run(self._itm_sync, image, list(texts))

    async def close(self) -> None:
        for batcher in (self._image_batcher, self._text_batcher):
            if batcher is not None:
                await batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
