"""Deterministic inputs for parity checks and benchmarks: varied sizes and content, no downloads."""
from __future__ import annotations

import numpy as np
from PIL import Image

SAMPLE_TEXTS = (
    "red leather ankle boots",
    "a photo of a blue denim jacket with silver buttons",
    "Men's running shoes, breathable mesh, size 44 — 79.99€",
    "striped cotton t-shirt " * 20,  # longer than the context: exercises truncation
    "it's a cozy wool sweater & it's on sale!",
    "sac à main en cuir — 皮革手袋, snake_case & <b>HTML</b> &amp; punctuation!?",
)


def sample_texts() -> list[str]:
    return list(SAMPLE_TEXTS)


def sample_images(count: int = 3, seed: int = 0) -> list[Image.Image]:
    """Photos-like RGB images (smooth gradients + texture) of different aspect ratios."""
    rng = np.random.default_rng(seed)
    sizes = [(320, 240), (200, 300), (256, 256), (640, 360), (90, 120)]
    images = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack(
            [
                128 + 100 * np.sin(x / (17 + 5 * index)),
                128 + 100 * np.cos(y / (23 + 3 * index)),
                128 + 60 * np.sin((x + y) / 31),
            ],
            axis=-1,
        )
        noisy = base + rng.normal(0, 12, size=base.shape)
        images.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB"))
    return images
