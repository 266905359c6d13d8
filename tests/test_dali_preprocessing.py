"""The DALI preprocessing path (GPU option of preprocess_image) against preprocessing/image.py, in DALI's CPU mode.

Runs where NVIDIA DALI is installed (`pip install -e '.[gpu-preprocessing]'`; its CPU operators need no
GPU); benchmarks/gpu_check.py runs the same comparison with nvJPEG on a GPU. Only the resampling kernels
differ (sizes and crop positions are computed as preprocessing.image computes them), so pixels agree to
a fraction of one 8-bit level on average.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import encode
from preprocessing.image import ImageDecodeError, ImageSpec, preprocess_each

pytest.importorskip("nvidia.dali")
from preprocessing.dali_image import DaliPreprocessor  # noqa: E402

SPEC = ImageSpec(size=(224, 224))
LEVEL = np.asarray(SPEC.std, dtype=np.float32).reshape(3, 1, 1) * 255  # normalized units -> 8-bit levels


@pytest.fixture(scope="module")
def dali() -> DaliPreprocessor:
    return DaliPreprocessor(SPEC, max_batch=8, device="cpu", threads=2)


def _levels(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs((got - expected) * LEVEL)


def test_dali_pixels_match_preprocessing_image(dali, real_photos):
    rotated = real_photos["chelsea"].copy()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: applied by both paths
    blobs = [encode(real_photos[name], "JPEG", quality=90) for name in ("coffee", "chelsea", "astronaut", "rocket", "camera")]
    blobs += [encode(real_photos["coffee"], "PNG"), encode(rotated, "JPEG", quality=90, exif=exif.tobytes())]
    got, expected = dali(blobs), preprocess_each(blobs, SPEC)
    means = []
    for g, e in zip(got, expected):
        assert g.shape == e.shape == (3, 224, 224) and g.dtype == np.float32
        diff = _levels(g, e)
        means.append(float(diff.mean()))
        assert diff.mean() <= 0.5 and diff.max() <= 8, (diff.mean(), diff.max())
    print(f"DALI cpu vs Pillow: mean abs pixel difference {np.mean(means):.3f} levels (of 255), worst image {max(means):.3f}")


def test_what_dali_does_differently_takes_the_pillow_path_and_bad_uploads_fail_alone(dali, real_photos):
    rgba = real_photos["astronaut"].convert("RGBA")
    rgba.putalpha(96)
    blobs = [encode(rgba, "PNG"), b"not an image", encode(real_photos["coffee"], "JPEG")[:2000], encode(real_photos["coffee"], "WEBP")]
    got, expected = dali(blobs), preprocess_each(blobs, SPEC)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[3], expected[3])  # composited on white by Pillow
    for index in (1, 2):
        assert isinstance(got[index], ImageDecodeError) and str(got[index]) == str(expected[index])


def test_dali_refuses_geometry_it_does_not_reproduce():
    with pytest.raises(ValueError, match="square shortest-side"):
        DaliPreprocessor(ImageSpec(size=(224, 224), resize_mode="squash"), device="cpu")
