"""Data adapters -> `PairSet` (images, candidate texts, optional labels) for fine-tuning and evaluation.

Sources: a catalog JSONL/CSV (client's format: id, image, title, description, category), a
Conceptual Captions style TSV (caption<TAB>image file), and Fashion-MNIST's IDX files (titles from
the category names with varied templates and synonyms). Images stay as files or uint8 arrays until
the trainer renders them at the model's size.
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

from quality.sample_catalog import CATEGORIES, find_fashion_mnist, read_idx

# Fashion-MNIST category -> words a shopper would type (the first is the canonical query noun).
FMNIST_SYNONYMS: dict[str, list[str]] = {
    "T-shirt/top": ["t-shirt", "tee", "top", "tshirt", "t-shirt/top"],
    "Trouser": ["trousers", "pants", "trouser", "jeans"],
    "Pullover": ["pullover", "sweater", "jumper"],
    "Dress": ["dress", "gown", "frock"],
    "Coat": ["coat", "jacket", "overcoat"],
    "Sandal": ["sandal", "sandals", "summer sandals"],
    "Shirt": ["shirt", "button-up shirt", "blouse"],
    "Sneaker": ["sneaker", "sneakers", "trainers", "running shoes"],
    "Bag": ["bag", "handbag", "purse", "tote bag"],
    "Ankle boot": ["ankle boot", "ankle boots", "boots", "boot"],
}
TEMPLATES = [
    "{c}", "a photo of a {c}", "a {c}", "a {c} product photo", "photo of {c}", "a picture of a {c}",
    "product image: {c}", "a black and white photo of a {c}", "{c} for sale", "a close-up photo of the {c}",
]
# Category queries of the acceptance test: one canonical query per class.
QUERY_TEMPLATES = ["{c}", "a photo of a {c}"]


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


def fashion_mnist_texts(category: str) -> list[str]:
    """Every template x synonym of one category: the text side of a Fashion-MNIST pair."""
    return [t.format(c=s) for s in FMNIST_SYNONYMS[category] for t in TEMPLATES]


def load_fashion_mnist(split: str = "train", folder: Path | None = None, limit: int | None = None, seed: int = 0) -> PairSet:
    """Fashion-MNIST's IDX files -> RGB uint8 photos inverted to dark-on-white, as the sample catalog shows them."""
    folder = folder or find_fashion_mnist()
    prefix = {"train": "train", "test": "t10k"}[split]
    if folder is None or not (folder / f"{prefix}-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError("Fashion-MNIST not found: apt-get install -y dataset-fashion-mnist")
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    order = np.arange(len(labels))
    if limit is not None and limit < len(labels):
        order = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
    per_class = [fashion_mnist_texts(c) for c in CATEGORIES]
    return PairSet(
        images=255 - images[order],
        texts=[per_class[int(label)] for label in labels[order]],
        labels=labels[order],
        ids=[f"{split}-{i}" for i in order],
        class_names=list(CATEGORIES),
        display_size=112,
    )


def category_queries(class_names: Sequence[str]) -> list[tuple[str, int]]:
    """(query text, class index) for category search: 'ankle boot', 'a photo of a ankle boot', ..."""
    out = []
    for label, name in enumerate(class_names):
        noun = FMNIST_SYNONYMS.get(name, [name.lower()])[0]
        out.extend((t.format(c=noun), label) for t in QUERY_TEMPLATES)
    return out
