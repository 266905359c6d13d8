"""The leak-free evaluation set: a seeded Fashion-MNIST catalog whose indexed text does not give the label
away, with validation and test splits (disjoint products and queries) and their query sets.

Products come from Fashion-MNIST's *test* split (fine-tuning uses the train split only). Seller noise
of each listing, drawn with `random.Random(seed)`:

- title: empty (`p_empty`), generic ("New arrival", "Item 4411-B"; `p_generic`), the *wrong* class in a
  train noun (`p_wrong`: a mislabelled listing), else a held-out synonym of the true class
  (quality/vocabulary.py HELDOUT_SYNONYMS, never seen in fine-tuning) with colour/adjective words;
- a generated brand and a SKU-like code ("Velmor 4411-B") appended to `p_brand` of the non-empty titles;
- description: empty (`p_no_description`) or colour / material / size / care words drawn independently
  of the class (no class-fixed materials, no "Category: X").

Ground truth (`label`) lives beside the product, never in the text sent to the gateway.

Queries (relevance by class unless said):
- text: split frames (VAL_FRAMES / TEST_FRAMES, disjoint from TRAIN_FRAMES) x class x train nouns;
- image: catalog photos, the query product excluded;
- composed: a photo of class A + a modifier naming a class B != A ("make it a sandal") -> class B;
- brand/SKU: "4411-B", "sku 4411-B", "Velmor 4411-B" -> that one product; "Velmor sneakers" -> the
  products of that brand and class whose titles carry the brand.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from quality.vocabulary import (CATEGORIES, COMPOSE_FRAMES_TEST, COMPOSE_FRAMES_VAL, HELDOUT_SYNONYMS, TEST_FRAMES,
                                TRAIN_NOUNS, VAL_FRAMES)

COLOURS = ["black", "white", "grey", "navy", "beige", "red", "olive", "brown", "charcoal", "ivory"]
MATERIALS = ["cotton", "wool", "leather", "denim", "linen", "polyester", "viscose", "canvas", "suede", "nylon", "silk"]
ADJECTIVES = ["classic", "modern", "slim", "relaxed", "premium", "everyday", "vintage", "soft", "lightweight", "bold"]
GENERIC = ["New arrival", "Best seller", "Limited edition", "Great gift idea", "Summer collection", "Clearance item",
           "Editor's pick", "Staff favourite", "Must have", "Fresh drop"]
CARE = ["Machine washable.", "Free returns.", "Ships in 24 hours.", "Hand wash only.", "Imported.", ""]
SIZES = ["XS", "S", "M", "L", "XL", "36", "38", "40", "42", "44", "one size"]
SYLLABLES = ["vel", "mor", "kas", "tra", "lin", "do", "ra", "fen", "qui", "zo", "bel", "nar", "sil", "to", "mar", "ek"]


@dataclass(frozen=True)
class NoiseConfig:
    p_empty: float = 0.15
    p_generic: float = 0.20
    p_wrong: float = 0.10
    p_brand: float = 0.35
    p_no_description: float = 0.40
    brands: int = 60


@dataclass
class EvalProduct:
    id: str
    index: int  # position in the Fashion-MNIST test split
    label: int
    title: str
    description: str
    brand: str = ""  # set only when the title carries it
    sku: str = ""


@dataclass
class EvalQuery:
    qid: str
    kind: str  # text | image | composed | brand_sku
    text: str
    image_id: str | None
    relevant: set[str]
    exclude: str | None = None

    @property
    def task(self) -> str:
        return {"text": "text->image", "image": "image->image", "composed": "composed", "brand_sku": "brand/SKU"}[self.kind]

    @property
    def query_type(self) -> str:
        """What the gateway can tell from the request: text, image, or composed."""
        return {"text": "text", "brand_sku": "text", "image": "image", "composed": "composed"}[self.kind]


@dataclass
class EvalSplit:
    name: str
    products: list[EvalProduct]
    queries: list[EvalQuery]
    images: np.ndarray = field(repr=False)  # [N, 28, 28] uint8 white-on-black, products[i].index rows

    def labels(self) -> dict[str, int]:
        return {p.id: p.label for p in self.products}


def brand_names(n: int, rng: random.Random) -> list[str]:
    """Generated, pronounceable, unique brand names (no real brand, no class word)."""
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize())
    return sorted(out)


def _title(label: int, rng: random.Random, noise: NoiseConfig) -> tuple[str, str]:
    """(title, kind) for one listing."""
    roll = rng.random()
    colour, adjective = rng.choice(COLOURS), rng.choice(ADJECTIVES)
    if roll < noise.p_empty:
        return "", "empty"
    if roll < noise.p_empty + noise.p_generic:
        return rng.choice(GENERIC), "generic"
    if roll < noise.p_empty + noise.p_generic + noise.p_wrong:
        noun = rng.choice([n for _, n in other_nouns(label)])
        return rng.choice([f"{colour} {noun}", f"{adjective} {noun}"]), "wrong"
    word = rng.choice(HELDOUT_SYNONYMS[CATEGORIES[label]])
    return rng.choice([f"{colour} {word}", f"{adjective} {word} in {colour}", f"{word}", f"{adjective} {colour} {word}"]), "synonym"


def other_nouns(label: int) -> list[tuple[int, str]]:
    """(class, train noun) of the other classes, leaving out nouns that contain a word of `label`'s class
    ("t-shirt" names a shirt too)."""
    own = [CATEGORIES[label].lower(), *TRAIN_NOUNS[CATEGORIES[label]]]
    return [(i, n) for i, c in enumerate(CATEGORIES) if i != label for n in TRAIN_NOUNS[c] if not any(w in n for w in own)]


def _description(rng: random.Random, noise: NoiseConfig) -> str:
    if rng.random() < noise.p_no_description:
        return ""
    parts = [f"Colour: {rng.choice(COLOURS)}.", f"Material: {rng.choice(MATERIALS)}.", f"Size {rng.choice(SIZES)}.", rng.choice(CARE)]
    rng.shuffle(parts)
    return " ".join(p for p in parts if p)


def make_products(indices: Sequence[int], labels: np.ndarray, prefix: str, rng: random.Random, brands: list[str],
                  skus: set[str], noise: NoiseConfig) -> list[EvalProduct]:
    out = []
    for index in indices:
        label = int(labels[index])
        title, kind = _title(label, rng, noise)
        product = EvalProduct(id=f"{prefix}-{index}", index=int(index), label=label, title=title, description=_description(rng, noise))
        if kind != "empty" and rng.random() < noise.p_brand:
            while True:
                sku = f"{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}"
                if sku not in skus:
                    skus.add(sku)
                    break
            product.brand, product.sku = rng.choice(brands), sku
            product.title = f"{product.brand} {title} {sku}".replace("  ", " ")
        out.append(product)
    return out


def make_queries(products: list[EvalProduct], frames: list[str], compose_frames: list[str], n_image: int, n_brand: int,
                 nouns_per_class: int, rng: random.Random) -> list[EvalQuery]:
    by_class: dict[int, set[str]] = {}
    for p in products:
        by_class.setdefault(p.label, set()).add(p.id)
    queries: list[EvalQuery] = []
    seen: set[str] = set()
    for frame in frames:
        for label, name in enumerate(CATEGORIES):
            for noun in rng.sample(TRAIN_NOUNS[name], min(nouns_per_class, len(TRAIN_NOUNS[name]))):
                text = frame.format(c=noun)
                if text not in seen and by_class.get(label):
                    seen.add(text)
                    queries.append(EvalQuery(f"t{len(queries)}", "text", text, None, by_class[label]))
    picks = rng.sample(products, min(n_image, len(products)))
    for p in picks:
        queries.append(EvalQuery(f"i{p.id}", "image", "", p.id, by_class[p.label] - {p.id}, exclude=p.id))
    for p in picks:
        target, noun = rng.choice([(c, n) for c, n in other_nouns(p.label) if by_class.get(c)])
        text = rng.choice(compose_frames).format(c=noun)
        queries.append(EvalQuery(f"c{p.id}", "composed", text, p.id, set(by_class[target]), exclude=p.id))
    branded = [p for p in products if p.sku]
    by_brand_class: dict[tuple[str, int], set[str]] = {}
    for p in branded:
        by_brand_class.setdefault((p.brand, p.label), set()).add(p.id)
    for p in rng.sample(branded, min(n_brand, len(branded))):
        form = rng.random()
        if form < 0.6:
            text = rng.choice([p.sku, f"sku {p.sku}", f"{p.brand} {p.sku}"])
            relevant = {p.id}
        else:
            text = f"{p.brand} {rng.choice(TRAIN_NOUNS[CATEGORIES[p.label]])}"
            relevant = by_brand_class[(p.brand, p.label)]
        queries.append(EvalQuery(f"b{p.id}", "brand_sku", text, None, set(relevant)))
    return queries


@dataclass(frozen=True)
class SplitSizes:
    validation: int = 3000
    test: int = 7000
    image_queries: tuple[int, int] = (200, 300)  # validation, test
    brand_queries: tuple[int, int] = (100, 150)
    nouns_per_class: int = 2


def build_splits(images: np.ndarray, labels: np.ndarray, sizes: SplitSizes = SplitSizes(), seed: int = 0,
                 noise: NoiseConfig = NoiseConfig()) -> dict[str, EvalSplit]:
    """Validation and test splits of Fashion-MNIST's test images (disjoint), each with its own queries."""
    rng = random.Random(seed)
    order = np.random.default_rng(seed).permutation(len(labels))
    if sizes.validation + sizes.test > len(order):
        raise ValueError(f"{sizes.validation} + {sizes.test} products asked, the source has {len(order)}")
    brands = brand_names(noise.brands, rng)
    skus: set[str] = set()
    out = {}
    for i, (name, count, frames, compose) in enumerate((
        ("validation", sizes.validation, VAL_FRAMES, COMPOSE_FRAMES_VAL),
        ("test", sizes.test, TEST_FRAMES, COMPOSE_FRAMES_TEST),
    )):
        start = 0 if name == "validation" else sizes.validation
        indices = np.sort(order[start:start + count])
        products = make_products(indices, labels, name[:3], rng, brands, skus, noise)
        queries = make_queries(products, frames, compose, sizes.image_queries[i], sizes.brand_queries[i], sizes.nouns_per_class, rng)
        out[name] = EvalSplit(name, products, queries, images)
    return out


def photo(split: EvalSplit, product: EvalProduct, size: int = 112):
    """The listing photo: dark-on-white, upscaled like the sample catalog (PIL image)."""
    from PIL import Image

    return Image.fromarray(255 - split.images[product.index]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


def write_split(split: EvalSplit, folder: Path, size: int = 112) -> Path:
    """folder/images/*.png + catalog.jsonl (id, image, title, description, brand, label) + queries.jsonl."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    catalog = folder / "catalog.jsonl"
    with catalog.open("w", encoding="utf-8") as handle:
        for p in split.products:
            image = f"images/{p.id}.png"
            if not (folder / image).is_file():
                photo(split, p, size).save(folder / image)
            handle.write(json.dumps({"id": p.id, "image": image, "title": p.title, "description": p.description,
                                     "brand": p.brand, "sku": p.sku, "label": CATEGORIES[p.label]}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for q in split.queries:
            row = asdict(q) | {"relevant": sorted(q.relevant)}
            handle.write(json.dumps(row) + "\n")
    return catalog


def leaks(split: EvalSplit) -> list[str]:
    """Products whose indexed text names their own class in a train noun or the class name (should be none)."""
    import re

    out = []
    for p in split.products:
        text = f"{p.title} {p.description}".lower()
        words = [CATEGORIES[p.label].lower(), *TRAIN_NOUNS[CATEGORIES[p.label]]]
        if any(re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", text) for w in words):
            out.append(p.id)
    return out
