"""A sample catalog of real product photos: Zalando's Fashion-MNIST (Debian `dataset-fashion-mnist`).

Reads the gzip IDX files with numpy, upscales each 28x28 grayscale photo (default 112x112, PNG)
and writes catalog.jsonl with a title, description, price, category, brand and attributes per
item (seeded, so the same N gives the same catalog). Where the dataset is absent, `--fallback`
uses scikit-image's sample photos plus drawn products instead, and says so.

    python -m quality.sample_catalog --out data/sample_catalog -n 200
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from quality.vocabulary import CATEGORIES

FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
SLUG = {"T-shirt/top": "tshirt", "Ankle boot": "ankle-boot"}
BRANDS = ["Northwind", "Urbanista", "Fjordline", "Camino", "Lumen", "Atelier 9"]
COLOURS = ["black", "white", "grey", "navy", "beige", "red", "olive", "brown"]
MATERIALS = {"T-shirt/top": "cotton", "Trouser": "denim", "Pullover": "wool", "Dress": "viscose", "Coat": "wool",
             "Sandal": "leather", "Shirt": "cotton", "Sneaker": "canvas", "Bag": "leather", "Ankle boot": "leather"}
SIZES = {"Sandal": ["38", "40", "42", "44"], "Sneaker": ["38", "40", "42", "44"], "Ankle boot": ["37", "39", "41", "43"],
         "Bag": ["one size"]}
PRICE = {"T-shirt/top": (9, 35), "Trouser": (25, 90), "Pullover": (30, 110), "Dress": (25, 150), "Coat": (70, 320),
         "Sandal": (20, 90), "Shirt": (20, 80), "Sneaker": (40, 160), "Bag": (25, 260), "Ankle boot": (55, 220)}
TITLES = ["{colour} {material} {noun}", "{brand} {noun} in {colour}", "classic {colour} {noun}", "{noun}, {material}, {colour}"]
NOUN = {"T-shirt/top": "t-shirt", "Trouser": "trousers", "Pullover": "pullover", "Dress": "dress", "Coat": "coat",
        "Sandal": "sandals", "Shirt": "shirt", "Sneaker": "sneakers", "Bag": "bag", "Ankle boot": "ankle boots"}


def find_fashion_mnist() -> Path | None:
    for folder in FASHION_MNIST_DIRS:
        if (folder / "t10k-images-idx3-ubyte.gz").is_file() and (folder / "t10k-labels-idx1-ubyte.gz").is_file():
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (big-endian header: magic with dtype and rank, then dims) as a numpy array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def _fashion_items(folder: Path, n: int, seed: int) -> Iterator[tuple[np.ndarray, str]]:
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    order = np.random.default_rng(seed).permutation(len(labels))[:n]
    for index in order:
        # Fashion-MNIST is white-on-black; invert so products sit on a light background like shop photos.
        yield 255 - images[index], CATEGORIES[int(labels[index])]


def _fallback_items(n: int, seed: int) -> Iterator[tuple[np.ndarray, str]]:
    """scikit-image photos (cropped, tinted) and drawn products, labelled with a nominal category."""
    from skimage import data

    from client.workload import synthetic_images
    from PIL import Image
    import io

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
    rng = random.Random(seed)
    drawn = synthetic_images(max(1, n), seed)
    for i in range(n):
        if i % 2 == 0:
            pixels = photos[(i // 2) % len(photos)]
            h, w = pixels.shape[:2]
            side = min(h, w) // 2
            y, x = rng.randint(0, h - side), rng.randint(0, w - side)
            crop = pixels[y : y + side, x : x + side]
        else:
            crop = np.asarray(Image.open(io.BytesIO(drawn[i])).convert("RGB"))
        yield crop, CATEGORIES[i % len(CATEGORIES)]


def write_catalog(out: Path, n: int = 200, size: int = 112, seed: int = 0, allow_fallback: bool = True) -> tuple[Path, str]:
    """Writes out/images/*.png and out/catalog.jsonl; returns (catalog path, source description)."""
    from PIL import Image

    folder = find_fashion_mnist()
    if folder is not None:
        items, source = _fashion_items(folder, n, seed), f"Fashion-MNIST ({folder})"
    elif allow_fallback:
        items, source = _fallback_items(n, seed), "scikit-image sample photos + drawn products (Fashion-MNIST not installed)"
    else:
        raise FileNotFoundError("Fashion-MNIST not found: apt-get install -y dataset-fashion-mnist")
    rng = random.Random(seed)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    catalog = out / "catalog.jsonl"
    with catalog.open("w", encoding="utf-8") as handle:
        for number, (pixels, category) in enumerate(items):
            slug = SLUG.get(category, category.lower())
            product_id = f"fm-{number:05d}-{slug}"
            image_name = f"images/{product_id}.png"
            Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC).save(out / image_name)
            colour, brand = rng.choice(COLOURS), rng.choice(BRANDS)
            material, noun = MATERIALS[category], NOUN[category]
            title = rng.choice(TITLES).format(colour=colour, material=material, noun=noun, brand=brand)
            low, high = PRICE[category]
            row = {
                "id": product_id,
                "image": image_name,
                "title": title[0].upper() + title[1:],
                "description": f"{brand} {noun} made of {material}, colour {colour}. Category: {category}.",
                "price": round(rng.uniform(low, high), 2),
                "category": category,
                "brand": brand,
                "in_stock": rng.random() > 0.1,
                "attributes": {"colour": colour, "material": material, "size": rng.choice(SIZES.get(category, ["S", "M", "L", "XL"]))},
            }
            handle.write(json.dumps(row) + "\n")
    return catalog, source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quality.sample_catalog", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for catalog.jsonl and images/")
    parser.add_argument("-n", type=int, default=200, help="number of products (default 200)")
    parser.add_argument("--size", type=int, default=112, help="image side in pixels (default 112)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fallback", action="store_true", help="fail when Fashion-MNIST is not installed")
    args = parser.parse_args(argv)
    try:
        catalog, source = write_catalog(args.out, args.n, args.size, args.seed, allow_fallback=not args.no_fallback)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"sample catalog: {catalog} ({args.n} products from {source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
