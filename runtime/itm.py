"""BLIP image-text matching on ONNX Runtime: P(match) for (image, text) pairs, e.g. to re-rank search hits.

The `blip_itm` graph holds its own vision encoder (the ITM checkpoint's, which differs from the
captioner's) and scores row-aligned pairs: pixel_values[i] with input_ids[i]. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from preprocessing.blip_tokenizer import BlipTokenizer
from preprocessing.image import ImageSpec
from runtime.manifest import BLIP_ITM, Manifest, ManifestError
from runtime.sessions import create_session


@dataclass(frozen=True)
class ItmSetup:
    """The ITM checkpoint's image spec, text length and BLIP tokenizer, read from the manifest.

    One reader for the in-process scorer and Triton's `preprocess_itm`, so both feed `blip_itm` alike.
    """

    image_spec: ImageSpec
    max_length: int
    tokenizer: BlipTokenizer

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> "ItmSetup":
        family = manifest.blip
        if not family or not family.get("itm") or not manifest.has_model(BLIP_ITM):
            raise ManifestError(f"{manifest.repository} has no BLIP ITM model; export with an ITM checkpoint")
        itm = family["itm"]
        return cls(ImageSpec.from_dict(itm["image"]), int(itm["max_length"]), BlipTokenizer.from_manifest_entry(manifest.repository, family["tokenizer"]))

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) [N, L]: `[CLS] text [SEP]`, padded to the longest text."""
        return self.tokenizer.encode_for_itm(texts, self.max_length)


class BlipItmScorer:
    """Scores image-text pairs with the exported ITM head (softmax probability of "match", in [0, 1])."""

    def __init__(
        self,
        manifest: Manifest,
        variant: str = "fp32",
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> None:
        self.setup = ItmSetup.from_manifest(manifest)
        self.image_spec, self.max_length, self.tokenizer = self.setup.image_spec, self.setup.max_length, self.setup.tokenizer
        self.session = create_session(manifest.graph_path(BLIP_ITM, variant), providers, intra_op_threads)

    def logits(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(itm_logits [B,2], itm_score [B]) for row-aligned pairs."""
        feeds = {
            "pixel_values": np.ascontiguousarray(pixel_values, dtype=np.float32),
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64),
        }
        if not len(feeds["pixel_values"]) == len(feeds["input_ids"]) == len(feeds["attention_mask"]):
            raise ValueError("pixel_values, input_ids and attention_mask need the same batch size")
        logits, score = self.session.run(["itm_logits", "itm_score"], feeds)
        return logits, score

    def score(self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.logits(pixel_values, input_ids, attention_mask)[1]

    def score_texts(self, pixel_values: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Pairs (image i, text i); one image against many texts, or many images against one text, broadcast."""
        images, count = len(pixel_values), len(texts)
        if images != count and 1 not in (images, count):
            raise ValueError(f"{images} images and {count} texts: pass equal counts, or one of either")
        input_ids, attention_mask = self.setup.encode(texts)
        batch = max(images, count)
        if images == 1:
            pixel_values = np.repeat(pixel_values, batch, axis=0)
        if count == 1:
            input_ids, attention_mask = np.repeat(input_ids, batch, axis=0), np.repeat(attention_mask, batch, axis=0)
        return self.score(pixel_values, input_ids, attention_mask)
