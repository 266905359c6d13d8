"""ONNX Runtime in-process on the exported repository: the embedded default backend.

Graph calls run in a small thread pool so the event loop keeps serving while a batch runs
(ONNX Runtime releases the GIL inside `run`).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from preprocessing.image import ImageLimits, decode_image, preprocess_images
from runtime.clip import ClipEncoder
from runtime.manifest import Manifest

log = logging.getLogger("gateway.backends.local")


class LocalBackend:
    name = "local"

    def __init__(self, settings) -> None:
        self.settings = settings
        self.limits = ImageLimits(max_bytes=settings.max_image_bytes)
        self._pool = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="ort")
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
        self.clip = ClipEncoder(manifest, variant=variant, intra_op_threads=threads, image_limits=self.limits)
        self.dim, self.model = manifest.embed_dim, str(manifest.clip.get("arch", ""))
        if manifest.blip and self.settings.caption:
            from runtime.caption import BlipCaptioner

            self.captioner = BlipCaptioner(manifest, variant="fp32", intra_op_threads=threads)
            try:
                from runtime.itm import BlipItmScorer

                self.itm_scorer = BlipItmScorer(manifest, variant="fp32", intra_op_threads=threads)
            except Exception as exc:  # noqa: BLE001 - ITM is optional
                log.info("no ITM scorer: %s", exc)
        log.info("local backend: %s (dim %d), captioner %s, itm %s", self.model, self.dim, self.has_captioner, self.has_itm)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self) -> None:
        await self._run(self._load)

    async def ping(self) -> bool:
        return self.clip is not None

    async def embed_images(self, blobs: Sequence[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), np.float32)
        return await self._run(self.clip.embed_image_bytes, list(blobs))

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return await self._run(self.clip.embed_texts, list(texts))

    def _caption_sync(self, blobs: Sequence[bytes]) -> list[str]:
        images = [decode_image(blob, self.limits) for blob in blobs]
        return self.captioner.caption(preprocess_images(images, self.captioner.image_spec))

    async def caption(self, blobs: Sequence[bytes]) -> list[str]:
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
        self._pool.shutdown(wait=False, cancel_futures=True)
