"""CLIP image/text embeddings on ONNX Runtime, fed by the shared preprocessing module."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from preprocessing.text import load_text_tokenizer
from preprocessing.image import ImageLimits, decode_image, preprocess_images
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, Manifest
from runtime.sessions import create_session


class ClipEncoder:
    """Both CLIP towers of one exported repository. Outputs are L2-normalized (the graphs do it)."""

    def __init__(
        self,
        manifest: Manifest,
        variant: str = "fp32",
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        image_limits: ImageLimits = ImageLimits(),
        engine: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.image_spec = manifest.image_spec("clip")
        self.tokenizer = load_text_tokenizer(manifest.repository, manifest.clip["tokenizer"])
        self.image_limits = image_limits
        self._image = create_session(manifest.graph_path(CLIP_IMAGE, variant), providers, intra_op_threads, engine=engine)
        self._text = create_session(manifest.graph_path(CLIP_TEXT, variant), providers, intra_op_threads, engine=engine)
        self.embed_dim = manifest.embed_dim

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        if len(pixel_values) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._image.run(None, {"pixel_values": pixel_values})[0]

    def embed_token_ids(self, input_ids: np.ndarray) -> np.ndarray:
        if len(input_ids) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._text.run(None, {"input_ids": input_ids})[0]

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_pixels(preprocess_images(images, self.image_spec))

    def embed_image_bytes(self, blobs: Sequence[bytes]) -> np.ndarray:
        return self.embed_images([decode_image(blob, self.image_limits) for blob in blobs])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_token_ids(self.tokenizer(texts))
