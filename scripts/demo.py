"""Main-job smoke run until the gateway lands: embed real photos and queries from the exported repository.

Shows the system's current end-to-end path (shared preprocessing -> ONNX Runtime -> normalized
CLIP space) on real images shipped with scikit-image, and prints what it did.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.clip import ClipEncoder  # noqa: E402
from runtime.manifest import Manifest  # noqa: E402

QUERIES = ["an astronaut", "a cat", "a cup of coffee", "a rocket launch"]


def main(repository: str) -> int:
    from skimage import data

    manifest = Manifest.load(repository)
    manifest.verify_checksums()
    encoder = ClipEncoder(manifest)
    photos = {name: Image.fromarray(getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")}
    started = time.perf_counter()
    image_vectors = encoder.embed_images(list(photos.values()))
    text_vectors = encoder.embed_texts(QUERIES)
    elapsed = (time.perf_counter() - started) * 1000
    print(f"model repository: {repository} (preset {manifest.data['preset']}, CLIP {manifest.clip['arch']}, dim {manifest.embed_dim})")
    print(f"embedded {len(photos)} photos and {len(QUERIES)} queries in {elapsed:.0f} ms with ONNX Runtime")
    scores = text_vectors @ image_vectors.T
    names = list(photos)
    for query, row in zip(QUERIES, scores):
        best = int(np.argmax(row))
        print(f"  query {query!r:<20} -> best photo {names[best]!r} (cosine {row[best]:+.3f})")
    if manifest.data["preset"] == "tiny":
        print("note: the tiny preset has random weights, so these matches are arbitrary; the base preset gives real ones")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "model_repository"))
