"""Interrogator tags: rank an e-commerce attribute vocabulary by CLIP similarity to an image.

After CLIP Interrogator (pharmapsychotic/clip-interrogator), which ranks large term lists against
the image embedding; here the lists are the facets of gateway/data/attributes.json (colours,
materials, patterns, styles, categories). Each term is embedded once as its facet's prompt and
cached on disk, keyed by a hash of the vocabulary and of the model (the embedding of a fixed
probe text, so the key is the same for the local and the Triton backend serving one model).
A term is kept when its probability within its facet, softmax(temperature * cosine) over the
facet's terms, reaches the facet's `min_probability` (so a facet with no clear winner says
nothing, instead of always naming its top terms); at most `per_facet` terms per facet. Facets that
need colour (`needs_colour`) say nothing about a grayscale photo.
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
    def __init__(
        self,
        facets: list[str],
        terms: list[str],
        facet_of: np.ndarray,
        vectors: np.ndarray,
        min_probability: Sequence[float] | None = None,
        needs_colour: Sequence[bool] | None = None,
        temperature: float = 100.0,
    ) -> None:
        self.facets = facets
        self.terms = terms
        self.facet_of = facet_of  # facet index per term
        self.vectors = vectors  # [T, D] normalized
        self.min_probability = list(min_probability or [0.5] * len(facets))
        self.needs_colour = list(needs_colour or [False] * len(facets))
        self.temperature = temperature

    @classmethod
    async def build(
        cls,
        embed_texts: Callable[[Sequence[str]], Awaitable[np.ndarray]],
        cache_dir: Path,
        vocabulary: Path = VOCABULARY,
    ) -> "Tagger":
        data = json.loads(vocabulary.read_text())
        facets, terms, prompts, facet_of, floors, colour = [], [], [], [], [], []
        for index, (facet, spec) in enumerate(data["facets"].items()):
            facets.append(facet)
            floors.append(float(spec.get("min_probability", 0.5)))
            colour.append(bool(spec.get("needs_colour", False)))
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
        return cls(facets, terms, np.asarray(facet_of), vectors, floors, colour, float(data.get("temperature", 100.0)))

    def tags(self, image_vectors: np.ndarray, per_facet: int = 2, grayscale: Sequence[bool] | None = None) -> list[list[Tag]]:
        """Tags per image: per facet, up to `per_facet` terms whose in-facet probability reaches the floor."""
        sims = np.asarray(image_vectors, dtype=np.float32) @ self.vectors.T  # [N, T]
        grayscale = list(grayscale) if grayscale is not None else [False] * len(sims)
        out: list[list[Tag]] = []
        for row, gray in zip(sims, grayscale):
            tags: list[Tag] = []
            for index, facet in enumerate(self.facets):
                if gray and self.needs_colour[index]:
                    continue
                members = np.flatnonzero(self.facet_of == index)
                scores = row[members]
                logits = self.temperature * (scores - scores.max())
                probability = np.exp(logits) / np.exp(logits).sum()
                for j in np.argsort(-probability)[:per_facet]:
                    if probability[j] >= self.min_probability[index]:
                        tags.append(Tag(self.terms[members[j]], facet, float(scores[j])))
            out.append(tags)
        return out
