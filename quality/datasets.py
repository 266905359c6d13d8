"""Data adapters -> `PairSet` (images, candidate texts, optional labels) for fine-tuning and evaluation.

Sources: a catalog JSONL/CSV (client's format: id, image, title, description, category), a
Conceptual Captions style TSV (caption<TAB>image file), COCO / Flickr30k Karpathy-split JSON
(dataset_coco.json, dataset_flickr30k.json), and Fashion-MNIST's IDX files or the shipped subset
(texts: train frames x train nouns of quality/vocabulary.py only). Images stay as files or uint8
arrays until the trainer renders them at the model's size.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from quality.sample_catalog import find_fashion_mnist, read_idx
from quality.vocabulary import CATEGORIES, train_texts

@dataclass
class PairSet:
    """Images (file paths or an N x H x W [x 3] uint8 array), candidate texts per item, optional labels."""

    images: Sequence[Path] | np.ndarray
    texts: list[list[str]]
    labels: np.ndarray | None = None
    ids: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    display_size: int | None = None  # array photos are first upscaled to this (as the catalog stores them)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray) -> "PairSet":
        index = np.asarray(index, dtype=np.int64)
        images = self.images[index] if isinstance(self.images, np.ndarray) else [self.images[i] for i in index]
        return PairSet(
            images=images,
            texts=[self.texts[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            ids=[self.ids[i] for i in index] if self.ids else [],
            class_names=self.class_names,
            display_size=self.display_size,
        )

    def split(self, val_fraction: float, seed: int = 0) -> tuple["PairSet", "PairSet"]:
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = max(1, int(round(len(self) * val_fraction)))
        return self.subset(order[n_val:]), self.subset(order[:n_val])

    def pil(self, i: int) -> Image.Image:
        if isinstance(self.images, np.ndarray):
            image = Image.fromarray(self.images[i]).convert("RGB")
            if self.display_size:
                image = image.resize((self.display_size, self.display_size), Image.Resampling.BICUBIC)
            return image
        with Image.open(self.images[i]) as image:
            return image.convert("RGB")

    def sample_text(self, i: int, rng: random.Random) -> str:
        return rng.choice(self.texts[i])


def _labels_from(values: list[str | None]) -> tuple[np.ndarray | None, list[str]]:
    if not values or any(v in (None, "") for v in values):
        return None, []
    names = sorted(set(values))  # type: ignore[arg-type]
    lookup = {name: i for i, name in enumerate(names)}
    return np.asarray([lookup[v] for v in values], dtype=np.int64), names


def _catalog_texts(row: dict) -> list[str]:
    texts = [str(row["title"]).strip()] if row.get("title") else []
    if row.get("caption"):
        texts.append(str(row["caption"]).strip())
    if not texts and row.get("description"):
        texts.append(str(row["description"]).strip())
    return texts


def load_catalog(path: Path) -> PairSet:
    """A catalog JSONL or CSV (columns id, image, title[, caption, description, category]); images relative to it."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("image") and _catalog_texts(r)]
    if not rows:
        raise ValueError(f"{path}: no rows with both an image and a title/caption")
    labels, names = _labels_from([r.get("category") for r in rows])
    return PairSet(
        images=[(path.parent / r["image"]) if not Path(r["image"]).is_absolute() else Path(r["image"]) for r in rows],
        texts=[_catalog_texts(r) for r in rows],
        labels=labels,
        ids=[str(r.get("id") or i) for i, r in enumerate(rows)],
        class_names=names,
    )


def load_cc_tsv(path: Path, image_root: Path | None = None) -> PairSet:
    """Conceptual Captions style TSV: caption<TAB>image file per line (a 'caption'/'image' header is skipped)."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    images, texts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{path}:{number + 1}: expected 'caption<TAB>image', got {line[:60]!r}")
        caption, image = parts[0].strip(), parts[1].strip()
        if number == 0 and caption.lower() in ("caption", "title", "text") and image.lower() in ("image", "file", "filepath", "url"):
            continue
        images.append(Path(image) if Path(image).is_absolute() else root / image)
        texts.append([caption])
    return PairSet(images=images, texts=texts, ids=[str(i) for i in range(len(images))])


def fashion_mnist_arrays(split: str, folder: Path | None = None, subset: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8 white-on-black, labels) of a split: the Debian dataset when installed
    (and `subset` is False), else the subset shipped in quality/data (tests and CI need no apt)."""
    folder = None if subset else folder or find_fashion_mnist()
    prefix = {"train": "train", "test": "t10k"}[split]
    if folder is not None and (folder / f"{prefix}-images-idx3-ubyte.gz").is_file():
        return read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return fashion_mnist_subset(split)


SUBSET = Path(__file__).parent / "data" / "fashion_mnist_subset.npz"


def fashion_mnist_subset(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The shipped subset (quality/data/README.md: which images, MIT licence)."""
    with np.load(SUBSET) as data:
        return data[f"{split}_images"], data[f"{split}_labels"].astype(np.int64)


def load_fashion_mnist(split: str = "train", folder: Path | None = None, limit: int | None = None, seed: int = 0,
                       subset: bool = False) -> PairSet:
    """Fashion-MNIST -> RGB uint8 photos inverted to dark-on-white, as the catalogs show them; texts are the
    train frames x train nouns only (quality/vocabulary.py), so held-out frames and synonyms stay unseen."""
    images, labels = fashion_mnist_arrays(split, folder, subset)
    order = np.arange(len(labels))
    if limit is not None and limit < len(labels):
        order = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
    per_class = [train_texts(c) for c in CATEGORIES]
    return PairSet(
        images=255 - images[order],
        texts=[per_class[int(label)] for label in labels[order]],
        labels=labels[order],
        ids=[f"{split}-{i}" for i in order],
        class_names=list(CATEGORIES),
        display_size=112,
    )


def load_karpathy(path: Path, image_root: Path | None = None, split: str = "test") -> PairSet:
    """COCO / Flickr30k Karpathy-split JSON (dataset_coco.json, dataset_flickr30k.json): the images of
    one split with their (usually five) captions; COCO's `filepath` (val2014/...) is honoured."""
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    data = json.loads(path.read_text(encoding="utf-8"))
    if "images" not in data:
        raise ValueError(f"{path}: not a Karpathy split file (no 'images' list)")
    images, texts, ids = [], [], []
    for entry in data["images"]:
        if entry.get("split") != split and not (split == "train" and entry.get("split") == "restval"):
            continue
        captions = [s.get("raw") or " ".join(s.get("tokens", [])) for s in entry.get("sentences", [])]
        captions = [c.strip() for c in captions if c and c.strip()]
        if not captions:
            continue
        images.append(root / entry.get("filepath", "") / entry["filename"])
        texts.append(captions)
        ids.append(str(entry.get("cocoid", entry.get("imgid", len(ids)))))
    if not images:
        raise ValueError(f"{path}: no images in split {split!r}")
    return PairSet(images=images, texts=texts, ids=ids)
