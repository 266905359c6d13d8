"""The independent reference: every vector recomputed from the checkpoint with open_clip/PyTorch, the tags and
the fusion written again here, every product scored (brute force). Nothing comes from the gateway.

- Model: the checkpoint named in the repository's manifest (clip.arch, clip.pretrained), built by
  export's open_clip loader in PyTorch fp32; images through open_clip's own eval transform (not
  preprocessing/), texts through open_clip's tokenizer (not the exported tokenizer.json).
- Channels of a product (the definitions of docs/gateway.md, written again):
  image = CLIP(photo); title = CLIP("title. description"), absent when both are empty;
  caption = CLIP("caption. tag1, tag2, ..."), absent when there is neither caption nor tag.
  Tags: per facet of the attribute vocabulary (gateway/data/attributes.json, data only), up to
  `per_facet` terms whose in-facet softmax probability reaches the facet's floor; no colour facet
  for grayscale photos. Captions: a repository with BLIP is refused for now (the reference has no
  BLIP of its own yet); the offline model has none.
- Query vector: CLIP text, CLIP image, or composed normalize((1 - t) image + t text).
- Fused score: sum_c w_c cos(q, v_c) / sum_c w_c over the channels the product has (a missing channel's
  weight is renormalized away). RRF: sum_c w_c / (k + rank_c) over full per-channel rankings.
- Keyword: BM25 (bm25s) over "title description", per query divided by its best score (0..1).
- Calibration: per (query type, channel) z-scores (cos - mean) / std, statistics from the validation split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

CHANNELS = ("image", "title", "caption")
ALL_CHANNELS = (*CHANNELS, "keyword")
VOCABULARY = Path(__file__).resolve().parents[1] / "gateway" / "data" / "attributes.json"


def title_text(title: str, description: str) -> str:
    return ". ".join(p.strip() for p in (title, description) if p and p.strip())


def caption_text(caption: str, tags: Sequence[str]) -> str:
    parts = [caption.strip()] if caption and caption.strip() else []
    if tags:
        parts.append(", ".join(tags))
    return ". ".join(parts)


class ReferenceModel:
    """open_clip in PyTorch from the repository's checkpoint."""

    def __init__(self, repository: Path, batch: int = 256) -> None:
        from export.clip import load_clip
        from export.torch_compat import import_open_clip

        manifest = json.loads((Path(repository) / "manifest.json").read_text())
        clip = manifest["clip"]
        if not clip.get("pretrained"):
            raise ValueError(f"{repository}: exported from random weights; the reference needs the checkpoint (clip.pretrained)")
        open_clip = import_open_clip()
        open_clip.add_model_config(Path(__file__).parent / "model_configs")
        self.model, _, self.tokenizer = load_clip(clip["arch"], clip["pretrained"])
        self.transform = open_clip.transform.image_transform_v2(
            open_clip.transform.PreprocessCfg(**self.model.visual.preprocess_cfg), is_train=False)
        self.has_blip = bool(manifest.get("blip"))
        self.checkpoint = clip["pretrained"]
        self.arch = clip["arch"]
        self.batch = batch

    @torch.no_grad()
    def images(self, pil_images: Iterable) -> np.ndarray:
        out, chunk = [], []
        for image in pil_images:
            chunk.append(self.transform(image.convert("RGB")))
            if len(chunk) == self.batch:
                out.append(F.normalize(self.model.encode_image(torch.stack(chunk)), dim=-1).numpy())
                chunk = []
        if chunk:
            out.append(F.normalize(self.model.encode_image(torch.stack(chunk)), dim=-1).numpy())
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        vecs = {}
        for start in range(0, len(unique), self.batch):
            chunk = unique[start:start + self.batch]
            for t, v in zip(chunk, F.normalize(self.model.encode_text(self.tokenizer(chunk)), dim=-1).numpy()):
                vecs[t] = v
        return np.stack([vecs[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, 1), np.float32)


class ReferenceTagger:
    """The interrogator written again from its definition (docs/gateway.md, attributes.json's description):
    within each facet, p(term) = softmax(temperature * cos(photo, prompt(term))); keep up to `per_facet`
    terms with p >= the facet's min_probability; facets that need colour say nothing for grayscale photos."""

    def __init__(self, model: ReferenceModel, vocabulary: Path = VOCABULARY, per_facet: int = 2) -> None:
        data = json.loads(Path(vocabulary).read_text())
        self.temperature = float(data.get("temperature", 100.0))
        self.facets = []
        for facet, spec in data["facets"].items():
            terms = list(spec["terms"])
            self.facets.append((facet, terms, model.texts([spec["prompt"].format(t) for t in terms]),
                                float(spec.get("min_probability", 0.5)), bool(spec.get("needs_colour", False))))
        self.per_facet = per_facet

    def tags(self, image_vectors: np.ndarray, grayscale: Sequence[bool]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in range(len(image_vectors))]
        for _facet, terms, vectors, floor, needs_colour in self.facets:
            logits = self.temperature * (image_vectors @ vectors.T)
            logits -= logits.max(axis=1, keepdims=True)
            probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            for row, p in enumerate(probability):
                if needs_colour and grayscale[row]:
                    continue
                for j in np.argsort(-p)[: self.per_facet]:
                    if p[j] >= floor:
                        out[row].append(terms[j])
        return out


def grayscale(image, tolerance: int = 6) -> bool:
    """No colour: every pixel's channels within `tolerance` of their mean (at 64 x 64)."""
    rgb = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
    return int(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max()) <= tolerance


@dataclass
class Catalog:
    """Reference vectors of the indexed products; `present[c]` says which products have channel c."""

    ids: list[str]
    vectors: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    texts: list[str]  # title + description (BM25)
    tags: list[list[str]]
    bm25: object = None

    def keyword_scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 per query, divided by the query's best score (all zero when nothing matches)."""
        import bm25s

        out = np.zeros((len(queries), len(self.ids)), np.float32)
        tokens = bm25s.tokenize(list(queries), token_pattern=TOKEN_PATTERN, stopwords="en", return_ids=False, show_progress=False)
        for row, query_tokens in enumerate(tokens):
            if query_tokens:
                scores = np.asarray(self.bm25.get_scores(query_tokens), np.float32)
                best = scores.max()
                if best > 0:
                    out[row] = scores / best
        return out


TOKEN_PATTERN = r"(?u)\b\w+\b"  # keeps one-character tokens: "4411-B" -> "4411", "b"


def build_catalog(model: ReferenceModel, ids: Sequence[str], photos: Iterable, titles: Sequence[str],
                  descriptions: Sequence[str], tagger: ReferenceTagger | None, captions: Sequence[str] | None = None) -> Catalog:
    """Every channel vector of every product, from the checkpoint. `tagger=None`: no tags."""
    import bm25s

    photos = [p.convert("RGB") for p in photos]
    image = model.images(photos)
    tags = tagger.tags(image, [grayscale(p) for p in photos]) if tagger is not None else [[] for _ in ids]
    captions = list(captions) if captions is not None else ["" for _ in ids]
    title_texts = [title_text(t, d) for t, d in zip(titles, descriptions)]
    caption_texts = [caption_text(c, t) for c, t in zip(captions, tags)]
    dim = image.shape[1]
    vectors, present = {"image": image}, {"image": np.ones(len(ids), bool)}
    for channel, texts in (("title", title_texts), ("caption", caption_texts)):
        mask = np.asarray([bool(t) for t in texts])
        matrix = np.zeros((len(ids), dim), np.float32)
        if mask.any():
            matrix[mask] = model.texts([t for t in texts if t])
        vectors[channel], present[channel] = matrix, mask
    present["keyword"] = np.asarray([bool(t) for t in title_texts])
    retriever = bm25s.BM25()
    corpus = bm25s.tokenize([f"{t} {d}" for t, d in zip(titles, descriptions)], token_pattern=TOKEN_PATTERN, stopwords="en",
                            show_progress=False)
    retriever.index(corpus, show_progress=False)
    # get_scores needs string tokens mapped through the corpus vocabulary: keep the tokenizer's vocab
    catalog = Catalog(list(ids), vectors, present, title_texts, tags, retriever)
    return catalog


def compose(image: np.ndarray | None, text: np.ndarray | None, text_weight: float) -> np.ndarray:
    if image is None:
        v = text
    elif text is None:
        v = image
    else:
        v = (1.0 - text_weight) * image + text_weight * text
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class Scores:
    """Per channel [Q, N] scores of one query set, and the channel-presence masks [N]."""

    channel: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    exclude: np.ndarray  # [Q] column index of the query product, -1 = none

    def subset(self, rows: np.ndarray) -> "Scores":
        return Scores({c: s[rows] for c, s in self.channel.items()}, self.present, self.exclude[rows])


def channel_scores(catalog: Catalog, q: np.ndarray, query_texts: Sequence[str], exclude: Sequence[int]) -> Scores:
    scores = {c: q @ catalog.vectors[c].T for c in CHANNELS}
    scores["keyword"] = catalog.keyword_scores(query_texts)
    return Scores(scores, catalog.present, np.asarray(exclude, np.int64))


@dataclass(frozen=True)
class Calibration:
    """Mean and std of each channel's scores (present products only), per query type."""

    stats: dict[str, dict[str, tuple[float, float]]]

    @classmethod
    def fit(cls, by_type: Mapping[str, Scores]) -> "Calibration":
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for qtype, s in by_type.items():
            out[qtype] = {}
            for c, m in s.channel.items():
                values = m[:, s.present[c]]
                out[qtype][c] = (float(values.mean()), float(values.std()) or 1.0)
        return cls(out)

    def apply(self, qtype: str, s: Scores) -> Scores:
        return Scores({c: (m - self.stats[qtype][c][0]) / self.stats[qtype][c][1] for c, m in s.channel.items()}, s.present, s.exclude)


def fused(s: Scores, weights: Mapping[str, float]) -> np.ndarray:
    """sum_c w_c s_c / sum_c w_c over the channels each product has (weights renormalized per product)."""
    num = np.zeros_like(s.channel["image"], dtype=np.float64)
    den = np.zeros(s.channel["image"].shape[1], np.float64)
    for c, w in weights.items():
        if w > 0:
            mask = s.present[c]
            num += w * np.where(mask[None, :], s.channel[c], 0.0)
            den += w * mask
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den[None, :] > 0, num / den[None, :], -np.inf)
    return out


def rrf(s: Scores, weights: Mapping[str, float], k: int = 60, depth: int | None = None) -> np.ndarray:
    """sum_c w_c / (k + rank_c), rank over the products that have channel c (the query product left out);
    with `depth`, only each channel's first `depth` products count (the candidate lists a search sees)."""
    out = np.zeros_like(next(iter(s.channel.values())), dtype=np.float64)
    total = sum(w for w in weights.values() if w > 0)
    for c, w in weights.items():
        if w <= 0:
            continue
        m = np.where(s.present[c][None, :], s.channel[c], -np.inf).astype(np.float64)
        rows = np.flatnonzero(s.exclude >= 0)
        m[rows, s.exclude[rows]] = -np.inf
        order = np.argsort(-m, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, m.shape[1] + 1)[None, :].repeat(len(m), 0), axis=1)
        keep = np.isfinite(m) if depth is None else np.isfinite(m) & (ranks <= depth)
        out += np.where(keep, (w / total) / (k + ranks), 0.0)
    return out


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int, tie: np.ndarray | None = None) -> np.ndarray:
    """Column indices of the best k per row, best first; the query product left out. Equal scores are
    ordered by `tie` (ascending; default the column index). Products that share a channel text (a tag-only
    caption) tie exactly, so a tie order is part of what P@10 measures: the gateway orders ties by product
    id, and `rank` passes the ids' order."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    k = min(k, scores.shape[1])
    rows = np.flatnonzero(exclude >= 0)
    scores[rows, exclude[rows]] = -np.inf
    tie = np.arange(scores.shape[1]) if tie is None else np.asarray(tie)
    order = np.lexsort((np.broadcast_to(tie, scores.shape), -scores), axis=1)
    return order[:, :k]
