"""Calibration inputs for static int8: real product photos and product texts, no downloads.

Images: Fashion-MNIST product photos (Debian `dataset-fashion-mnist`, train split, inverted to
dark-on-white as the sample catalog shows them) and scikit-image's sample photographs where those
are installed, then the synthetic sample images; texts: product titles in the sample catalog's
style. Static quantization fixes activation ranges from these, so they should look like what the
deployment embeds; pass your own catalog's images for a real deployment.
"""
from __future__ import annotations

import random

import numpy as np
from PIL import Image

from export.sample_inputs import sample_images, sample_texts


def calibration_images(count: int = 64, seed: int = 1) -> list[Image.Image]:
    images: list[Image.Image] = []
    try:
        from quality.sample_catalog import find_fashion_mnist, read_idx

        folder = find_fashion_mnist()
        if folder is not None and (folder / "train-images-idx3-ubyte.gz").is_file():
            pixels = read_idx(folder / "train-images-idx3-ubyte.gz")
            order = np.random.default_rng(seed).permutation(len(pixels))[: (count * 3) // 4]
            images += [Image.fromarray(255 - pixels[i]).convert("RGB") for i in order]
    except (ImportError, OSError, ValueError):
        pass
    try:
        from skimage import data

        photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
        images += [Image.fromarray(p).convert("RGB") for p in photos]
    except ImportError:
        pass
    if len(images) < count:
        images += sample_images(count - len(images), seed)
    return images[:count]


def calibration_texts(count: int = 64, seed: int = 1) -> list[str]:
    from quality.sample_catalog import BRANDS, COLOURS, MATERIALS, NOUN, TITLES

    rng = random.Random(seed)
    texts = list(sample_texts())
    while len(texts) < count:
        category = rng.choice(list(NOUN))
        template = rng.choice(TITLES)
        texts.append(template.format(colour=rng.choice(COLOURS), material=MATERIALS[category], noun=NOUN[category], brand=rng.choice(BRANDS)))
    return texts[:count]
