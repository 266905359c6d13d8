"""The shared image path equals open_clip's eval transform, and untrusted bytes fail cleanly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import encode
from export.torch_compat import import_open_clip
from preprocessing.image import (
    ImageDecodeError,
    ImageLimits,
    ImageSpec,
    decode_image,
    preprocess_images,
    resize_and_crop,
)

open_clip = import_open_clip()


@pytest.mark.parametrize("size", [224, 64, 256])
@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_matches_open_clip_transform_on_real_photos(real_photos, size, resize_mode):
    reference = open_clip.image_transform(size, is_train=False, resize_mode=resize_mode)
    spec = ImageSpec(size=(size, size), resize_mode=resize_mode)
    for name, photo in real_photos.items():
        ours = preprocess_images([photo], spec)[0]
        theirs = reference(photo).numpy()
        assert ours.shape == theirs.shape == (3, size, size), name
        assert np.max(np.abs(ours - theirs)) <= 1e-5, (name, float(np.max(np.abs(ours - theirs))))


def test_matches_open_clip_model_preprocess_cfg(real_photos):
    """Through a model's own preprocess config (mean/std/interpolation of that checkpoint)."""
    from export.clip import MODEL_CONFIG_DIR, image_spec_from_open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms("mm-tiny-clip")
    spec = image_spec_from_open_clip(model)
    photo = real_photos["coffee"]
    assert np.max(np.abs(preprocess_images([photo], spec)[0] - preprocess(photo).numpy())) <= 1e-5


def test_bilinear_and_non_square_targets(real_photos):
    photo = real_photos["rocket"]
    reference = open_clip.image_transform((96, 128), is_train=False, interpolation="bilinear")
    ours = preprocess_images([photo], ImageSpec(size=(96, 128), interpolation="bilinear"))[0]
    assert np.max(np.abs(ours - reference(photo).numpy())) <= 1e-5


def test_batch_stacks_in_order(real_photos):
    spec = ImageSpec(size=(32, 32))
    photos = list(real_photos.values())
    batch = preprocess_images(photos, spec)
    assert batch.shape == (len(photos), 3, 32, 32) and batch.dtype == np.float32
    for index, photo in enumerate(photos):
        np.testing.assert_array_equal(batch[index], preprocess_images([photo], spec)[0])


def test_decode_jpeg_png_webp_grayscale(real_photos):
    for fmt in ("JPEG", "PNG", "WEBP"):
        image = decode_image(encode(real_photos["chelsea"], fmt))
        assert image.mode == "RGB" and image.size == real_photos["chelsea"].size
    assert decode_image(encode(real_photos["camera"], "PNG")).mode == "RGB"


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (5, 5, 15, 15))  # opaque blue square
    image = decode_image(encode(rgba, "PNG"))
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((10, 10)) == (0, 0, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    rotated = decode_image(encode(image, "JPEG", exif=exif))
    assert rotated.size == (20, 40)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image"),
    ],
)
def test_bad_bytes_raise_clear_errors(blob, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(blob)


def test_truncated_jpeg_is_refused(real_photos):
    blob = encode(real_photos["astronaut"], "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(blob[: len(blob) // 2])


def test_limits_on_size_pixels_and_sides(real_photos):
    blob = encode(real_photos["astronaut"], "PNG")
    with pytest.raises(ImageDecodeError, match="bytes; the limit"):
        decode_image(blob, ImageLimits(max_bytes=1000))
    with pytest.raises(ImageDecodeError, match="pixels; the limit"):
        decode_image(blob, ImageLimits(max_pixels=512 * 511))
    with pytest.raises(ImageDecodeError, match="each side must be"):
        decode_image(encode(Image.new("RGB", (4, 300)), "PNG"), ImageLimits(min_side=8))
    assert decode_image(encode(Image.new("RGB", (1, 1)), "PNG")).size == (1, 1)  # served by default


def test_decompression_bomb_is_refused_before_decoding():
    # A 30000x30000 PNG compresses to a few hundred KB; only its header is read before refusing.
    bomb = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    with pytest.raises(ImageDecodeError, match="pixels"):
        decode_image(bomb)


def test_extreme_aspect_ratio_is_cropped_before_resizing():
    # A 1x3000 strip, red in its middle third: resize-shortest would first make it 224x672000.
    strip = Image.new("RGB", (1, 3000), (0, 0, 255))
    strip.paste((255, 0, 0), (0, 1000, 1, 2000))
    spec = ImageSpec(size=(224, 224))
    out = resize_and_crop(strip, spec)
    assert out.size == (224, 224) and out.getpixel((112, 112)) == (255, 0, 0)
    assert preprocess_images([strip, Image.new("RGB", (3000, 2))], spec).shape == (2, 3, 224, 224)
    longest = ImageSpec(size=(224, 224), resize_mode="longest")
    assert resize_and_crop(Image.new("RGB", (5000, 1)), longest).size == (224, 224)  # no zero-height resize
