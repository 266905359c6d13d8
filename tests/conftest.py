"""Session fixtures: one tiny export shared by every test that needs model files."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.manifest import Manifest

# Tests run the graphs on ONNX Runtime everywhere: the shipped `auto` engine would pick OpenVINO
# bf16 on some CPUs only, and tests must not depend on the host (engines: tests/test_runtime_engines.py).
os.environ.setdefault("MM_ENGINE", "onnxruntime")


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    """`python -m export --preset tiny --int8 --fp16` into a temp model repository (once per run)."""
    from export.cli import main

    out = tmp_path_factory.mktemp("models") / "model_repository"
    assert main(["--preset", "tiny", "--out", str(out), "--int8", "--fp16", "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_manifest(tiny_repository) -> Manifest:
    return Manifest.load(tiny_repository)


def _skimage_photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": data.astronaut(),  # 512x512 RGB
        "chelsea": data.chelsea(),  # 300x451 RGB
        "coffee": data.coffee(),  # 400x600 RGB
        "rocket": data.rocket(),  # 427x640 RGB
        "camera": data.camera(),  # 512x512 grayscale
    }


@pytest.fixture(scope="session")
def real_photos() -> dict[str, Image.Image]:
    """Real photographs shipped with scikit-image (offline), as PIL images in their own modes."""
    return {name: Image.fromarray(pixels) for name, pixels in _skimage_photos().items()}


def encode(image: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()
