"""The inference backend interface: what the gateway asks of the models, wherever they run."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class InferenceBackend(Protocol):
    """CLIP embeddings, BLIP captions and (optionally) ITM scores for the gateway.

    Inputs are raw image bytes and UTF-8 text: preprocessing runs next to the models (in-process
    for `local`, in Triton's python models for `triton`). Embeddings come back L2-normalized
    float32 [N, dim]. Connection failures raise gateway.errors.Unavailable; bad images raise
    preprocessing.image.ImageDecodeError and bad text preprocessing.clip_tokenizer.TextInputError.
    """

    name: str
    dim: int
    model: str
    accepts_decoded: bool  # embed_images / caption also take decoded RGB PIL images (decode once on ingest)

    @property
    def has_captioner(self) -> bool: ...
    @property
    def has_itm(self) -> bool: ...

    async def start(self) -> None: ...
    async def ping(self) -> bool: ...
    async def embed_images(self, blobs: Sequence[bytes]) -> np.ndarray: ...
    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    async def caption(self, blobs: Sequence[bytes]) -> list[str]: ...
    async def itm(self, image: bytes, texts: Sequence[str]) -> np.ndarray: ...
    async def close(self) -> None: ...


def create_backend(settings) -> InferenceBackend:
    """The backend the settings name (imports lazily: the local one needs no tritonclient, and back)."""
    if settings.backend == "local":
        from gateway.backends.local import LocalBackend

        return LocalBackend(settings)
    if settings.backend == "triton":
        from gateway.backends.triton import TritonBackend

        return TritonBackend(settings)
    raise ValueError(f"unknown backend {settings.backend!r}")
