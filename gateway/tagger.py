"""Interrogator tags: rank an e-commerce attribute vocabulary by CLIP similarity to an image.

After CLIP Interrogator (pharmapsychotic/clip-interrogator), which ranks large term lists against
the image embedding; here the lists are the facets of gateway/data/attributes.json (colours,
materials, patterns, styles, categories). Each term is embedded once as its facet's prompt and
cached on disk, keyed by a hash of the vocabulary and of the model (the embedding of a fixed
probe text, so the key is the same for the local and the Triton backend serving one model).
Per facet, the best `per_facet` terms whose cosine beats the facet's mean by `margin` are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import numpy as np

log = logging.getLogger("gateway.tagger")

VOCABULARY = Path(__file__).parent / "data" / "attributes.json"
PROBE_TEXT = "a photo of a product"


@dataclass(frozen=True)
class Tag:
    term: str
    facet: str
    score: float


class Tagger:
    def __init__(self, facets: list[str], terms: list[str], facet_of: np.ndarray, vectors: np.ndarray) -> None:
        self.facets = facets
        self.terms = terms
        self.facet_of = facet_of  # facet index per term
        self.vectors = vectors  # [T, D] normalized

    @classmethod
    async def build(
        cls,
        embed_texts: Callable[[Sequence[str]], Awaitable[np.ndarray]],
        cache_dir: Path,
        vocabulary: Path = VOCABULARY,
    ) -> "Tagger":
        data = json.loads(vocabulary.read_text())
        facets, terms, prompts, facet_of = [], [], [], []
        for index, (facet, spec) in enumerate(data["facets"].items()):
            facets.append(facet)
            for term in spec["terms"]:
                terms.append(term)
                prompts.append(spec["prompt"].format(term))
                facet_of.append(index)
        probe = np.asarray(await embed_texts([PROBE_TEXT]), dtype=np.float32)
        key = hashlib.sha256(vocabulary.read_bytes() + np.round(probe, 4).tobytes()).hexdigest()[:24]
        cache = Path(cache_dir) / f"tagger-{key}.npy"
        vectors = None
        if cache.is_file():
            try:
                vectors = np.load(cache)
                if vectors.shape != (len(terms), probe.shape[1]):
                    vectors = None
            except (OSError, ValueError):
                vectors = None
        if vectors is None:
            vectors = np.asarray(await embed_texts(prompts), dtype=np.float32)
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp.npy")
                np.save(tmp, vectors)
                tmp.replace(cache)
            except OSError as exc:
                log.warning("cannot cache tag vectors in %s: %s", cache, exc)
            log.info("embedded %d vocabulary terms (cache %s)", len(terms), cache)
        return cls(facets, terms, np.asarray(facet_of), vectors)

    def tags(self, image_vectors: np.ndarray, per_facet: int = 2, margin: float = 0.0) -> list[list[Tag]]:
        """Tags per image: for each facet the top `per_facet` terms above the facet mean + margin."""
        sims = np.asarray(image_vectors, dtype=np.float32) @ self.vectors.T  # [N, T]
        out: list[list[Tag]] = []
        for row in sims:
            tags: list[Tag] = []
            for index, facet in enumerate(self.facets):
                members = np.flatnonzero(self.facet_of == index)
                scores = row[members]
                threshold = float(scores.mean()) + margin
                for j in np.argsort(-scores)[:per_facet]:
                    if scores[j] > threshold:
                        tags.append(Tag(self.terms[members[j]], facet, float(scores[j])))
            out.append(tags)
        return out
