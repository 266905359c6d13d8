"""Image decoding and model preprocessing, matching open_clip's eval transform and BLIP's processor.

The pixel path reproduces torchvision's Resize/CenterCrop on PIL images (same PIL resampling calls,
same rounding), so embeddings computed here equal those of open_clip's own transform.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ResizeMode = Literal["shortest", "longest", "squash"]
Interpolation = Literal["bicubic", "bilinear"]

_PIL_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ImageDecodeError(ValueError):
    """The bytes are not an image we accept; the message says why (shown to API callers)."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on untrusted uploads: a decompression bomb or a 1-pixel image is refused, not processed."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 1  # a 1x1 image is upscaled like any other


@dataclass(frozen=True)
class ImageSpec:
    """How one model wants its pixels; stored in the export manifest and read back by every consumer."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: Interpolation = "bicubic"
    resize_mode: ResizeMode = "shortest"
    fill_color: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ImageSpec":
        return cls(
            size=tuple(data["size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", "bicubic"),
            resize_mode=data.get("resize_mode", "shortest"),
            fill_color=int(data.get("fill_color", 0)),
        )


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode untrusted bytes into an RGB image.

    EXIF orientation is applied (phone photos), and transparency is composited on white, which is
    how product shots with transparent backgrounds are shown in a shop.
    """
    image = _open(data, limits, load=True)
    image = ImageOps.exif_transpose(image)
    return to_rgb(image)


def probe_image(data: bytes, limits: ImageLimits = ImageLimits()) -> tuple[int, int]:
    """(width, height) from the header only: the cheap checks of decode_image (empty, byte limit, not an
    image, decompression bomb, sides) without decoding the pixels; truncation shows only when decoding."""
    return _open(data, limits, load=False).size


def _open(data: bytes, limits: ImageLimits, load: bool) -> Image.Image:
    if not data:
        raise ImageDecodeError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageDecodeError(
                    f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels"
                )
            if load:
                image.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:  # Pillow's message would show a BytesIO repr
        raise ImageDecodeError("not a supported image: the bytes are not in an image format Pillow reads (JPEG, PNG, WebP, ...)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"not a supported image: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    if min(image.size) < limits.min_side:
        raise ImageDecodeError(
            f"image is {image.size[0]}x{image.size[1]} pixels; each side must be >= {limits.min_side}"
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _resize_shortest(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    # torchvision.transforms.functional.resize with an int: shorter side -> size, longer side truncated.
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return image.resize((new_w, new_h), resample)


def _center_crop(image: Image.Image, size: tuple[int, int], fill: int = 0) -> Image.Image:
    # torchvision.transforms.functional.center_crop: pad if smaller, then round((dim - crop) / 2).
    crop_h, crop_w = size
    width, height = image.size
    if crop_w > width or crop_h > height:
        pad_l = (crop_w - width) // 2 if crop_w > width else 0
        pad_t = (crop_h - height) // 2 if crop_h > height else 0
        pad_r = (crop_w - width + 1) // 2 if crop_w > width else 0
        pad_b = (crop_h - height + 1) // 2 if crop_h > height else 0
        padded = Image.new(image.mode, (width + pad_l + pad_r, height + pad_t + pad_b), fill)
        padded.paste(image, (pad_l, pad_t))
        image = padded
        width, height = image.size
        if crop_w == width and crop_h == height:
            return image
    top = int(round((height - crop_h) / 2.0))
    left = int(round((width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def _resize_longest(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    # open_clip ResizeKeepRatio(longest=1): scale so the image fits inside `size`.
    width, height = image.size
    ratio = max(height / size[0], width / size[1])
    new_h, new_w = max(1, round(height / ratio)), max(1, round(width / ratio))
    return image.resize((new_w, new_h), resample)


MAX_ASPECT = 8.0  # longer / shorter side kept before resizing (see _limit_aspect)


def _limit_aspect(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Center-crop the long side to MAX_ASPECT times the short side (times the target's own ratio).

    Resize-shortest then center-crop keeps only the middle of a very long image anyway, but resizing
    a 1x2000 strip first would make a 224x448000 image; cropping first bounds the work. Images within
    the ratio (every ordinary photo) are untouched, so parity with open_clip holds for them.
    """
    width, height = image.size
    ratio = MAX_ASPECT * max(target) / min(target)
    if width > height * ratio:
        keep = max(1, round(height * ratio))
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    if height > width * ratio:
        keep = max(1, round(width * ratio))
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))
    return image


def resize_and_crop(image: Image.Image, spec: ImageSpec) -> Image.Image:
    """The geometric part of the transform (PIL in, PIL out)."""
    resample = _PIL_RESAMPLE[spec.interpolation]
    height, width = spec.size
    if spec.resize_mode != "squash":
        image = _limit_aspect(image, spec.size)
    if spec.resize_mode == "squash":
        return image.resize((width, height), resample)
    if spec.resize_mode == "longest":
        return _center_crop(_resize_longest(image, spec.size, resample), spec.size, spec.fill_color)
    if height != width:
        # open_clip ResizeKeepRatio(longest=0) for a non-square target; open_clip builds it without
        # its interpolation argument, so it is always bicubic there, and so it is here.
        w0, h0 = image.size
        ratio = min(h0 / height, w0 / width)
        image = image.resize((round(w0 / ratio), round(h0 / ratio)), Image.Resampling.BICUBIC)
    else:
        image = _resize_shortest(image, height, resample)
    return _center_crop(image, spec.size)


def pixels(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """One PIL image -> float32 [3, H, W], normalized for the model."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    chw = np.asarray(resize_and_crop(image, spec).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (chw - mean) / std


def preprocess_images(images: Iterable[Image.Image], spec: ImageSpec) -> np.ndarray:
    """PIL images -> float32 NCHW batch, normalized for the model."""
    arrays = [pixels(image, spec) for image in images]
    if not arrays:
        return np.zeros((0, 3, *spec.size), dtype=np.float32)
    return np.ascontiguousarray(np.stack(arrays), dtype=np.float32)


def preprocess_each(
    blobs: Sequence[bytes],
    spec: ImageSpec,
    limits: ImageLimits = ImageLimits(),
    map_fn: Callable[..., Iterable] = map,
) -> list[np.ndarray | ImageDecodeError]:
    """Each upload -> its [3, H, W] pixels, or the ImageDecodeError that refused it.

    For batch servers: one bad upload fails alone, and `map_fn` (e.g. a thread pool's `map`) decodes
    the items in parallel; Pillow releases the GIL while it decodes and resizes.
    """

    def one(blob: bytes) -> np.ndarray | ImageDecodeError:
        try:
            return pixels(decode_image(blob, limits), spec)
        except ImageDecodeError as exc:
            return exc

    return list(map_fn(one, blobs))


def is_grayscale(image: Image.Image, tolerance: int = 6) -> bool:
    """True when an (RGB) image carries no colour: its channels agree within `tolerance` everywhere.

    The interrogator says nothing about colour for such photos (gateway/tagger.py)."""
    if image.mode in ("L", "LA", "I", "I;16", "F", "1"):
        return True
    small = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.int16)
    return int(np.abs(small - small.mean(axis=2, keepdims=True)).max()) <= tolerance
