"""Batch image preprocessing with NVIDIA DALI: nvJPEG decode and resize on the GPU (or DALI's CPU operators).

The GPU option of Triton's `preprocess_image` (config parameter `decoder: "dali"`). It computes the
same geometry as `preprocessing.image` (torchvision's shorter-side resize with the longer side
truncated, then the centre crop with torchvision's rounding) from each image's header and hands DALI
exact sizes and crop positions, so only the resampling kernels differ (DALI's antialiased cubic vs
Pillow's): the mean abs pixel difference is reported by the tests (CPU mode) and by
benchmarks/gpu_check.py (GPU). What DALI does not do as we do goes to the Pillow path, item by item:
transparency (composited on white here), formats other than JPEG/PNG, and images the limits refuse;
a batch DALI cannot decode falls back to Pillow entirely, so a corrupt upload still fails alone.
"""
from __future__ import annotations

import io
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from preprocessing.image import ImageDecodeError, ImageLimits, ImageSpec, preprocess_each

_DALI_FORMATS = {"JPEG", "PNG"}
_OPAQUE_MODES = {"RGB", "L", "YCbCr", "CMYK"}


def dali_available() -> str | None:
    """None when DALI imports; else the reason (pip install nvidia-dali-cuda120: the `gpu-preprocessing` extra)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError as exc:
        return f"NVIDIA DALI is not installed ({exc}); pip install -e '.[gpu-preprocessing]'"
    return None


def _geometry(width: int, height: int, size: int) -> tuple[int, int, float, float]:
    """(new_h, new_w, crop_pos_y, crop_pos_x) of preprocessing.image's shortest-side resize + centre crop."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = (size, int(size * long / short)) if short != size else (short, long)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    pos = []
    for dim in (new_h, new_w):
        extra = dim - size
        pos.append(int(round(extra / 2.0)) / extra if extra > 0 else 0.0)
    return new_h, new_w, pos[0], pos[1]


class DaliPreprocessor:
    """Upload bytes -> float32 [3, H, W] per item (or the ImageDecodeError), like preprocess_each."""

    def __init__(self, spec: ImageSpec, max_batch: int = 64, device: str = "gpu", threads: int = 4, device_id: int = 0,
                 limits: ImageLimits = ImageLimits()) -> None:
        reason = dali_available()
        if reason:
            raise RuntimeError(reason)
        height, width = spec.size
        if spec.resize_mode != "shortest" or height != width:
            raise ValueError(f"the DALI path does square shortest-side resize + centre crop only, not {spec.resize_mode} {spec.size}")
        if device not in ("gpu", "cpu"):
            raise ValueError(f"DALI device must be 'gpu' or 'cpu', not {device!r}")
        self.spec, self.limits, self.device, self.max_batch = spec, limits, device, max_batch
        self._pipe = self._build(max_batch, threads, None if device == "cpu" else device_id)

    def _build(self, max_batch: int, threads: int, device_id: int | None):
        import nvidia.dali as dali
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types

        spec, size = self.spec, self.spec.size[0]
        interp = types.INTERP_CUBIC if spec.interpolation == "bicubic" else types.INTERP_LINEAR
        decode_on = "mixed" if self.device == "gpu" else "cpu"

        @dali.pipeline_def(batch_size=max_batch, num_threads=threads, device_id=device_id, prefetch_queue_depth=1)
        def pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1, no_copy=False)
            shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)  # (new_h, new_w)
            pos_y = fn.external_source(name="pos_y", dtype=types.FLOAT, ndim=0)
            pos_x = fn.external_source(name="pos_x", dtype=types.FLOAT, ndim=0)
            images = fn.decoders.image(encoded, device=decode_on, output_type=types.RGB, jpeg_fancy_upsampling=True)
            images = fn.resize(images, size=shape, interp_type=interp, antialias=True)
            return fn.crop_mirror_normalize(
                images, crop=(size, size), crop_pos_x=pos_x, crop_pos_y=pos_y, dtype=types.FLOAT, output_layout="CHW",
                mean=[255.0 * m for m in spec.mean], std=[255.0 * s for s in spec.std],
            )

        pipe = pipeline()
        pipe.build()
        return pipe

    def _dali_able(self, blob: bytes) -> tuple[int, int] | None:
        """(width, height) when DALI can take this upload exactly as Pillow would; None -> the Pillow path."""
        if not blob or len(blob) > self.limits.max_bytes:
            return None
        try:
            with Image.open(io.BytesIO(blob)) as image:  # the header only: no pixel decode
                width, height = image.size
                if image.format not in _DALI_FORMATS or image.mode not in _OPAQUE_MODES or "transparency" in image.info:
                    return None
                if width * height > self.limits.max_pixels or min(width, height) < self.limits.min_side:
                    return None
                if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    width, height = height, width  # DALI applies the EXIF rotation, as decode_image does
                return width, height
        except Exception:  # noqa: BLE001 - not even a header: Pillow gives the message
            return None

    def _run(self, blobs: list[bytes], sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        geometry = [_geometry(w, h, self.spec.size[0]) for w, h in sizes]
        self._pipe.feed_input("encoded", [np.frombuffer(b, dtype=np.uint8) for b in blobs])
        self._pipe.feed_input("shape", [np.array(g[:2], dtype=np.float32) for g in geometry])
        self._pipe.feed_input("pos_y", [np.array(g[2], dtype=np.float32) for g in geometry])
        self._pipe.feed_input("pos_x", [np.array(g[3], dtype=np.float32) for g in geometry])
        (out,) = self._pipe.run()
        if self.device == "gpu":
            out = out.as_cpu()
        return [np.array(out[i]) for i in range(len(blobs))]

    def __call__(self, blobs: Sequence[bytes], map_fn: Callable[..., Iterable] = map) -> list[np.ndarray | ImageDecodeError]:
        results: list[np.ndarray | ImageDecodeError | None] = [None] * len(blobs)
        fast = [(i, self._dali_able(b)) for i, b in enumerate(blobs)]
        fast = [(i, s) for i, s in fast if s is not None]
        for start in range(0, len(fast), self.max_batch):
            chunk = fast[start : start + self.max_batch]
            try:
                for (i, _), pixels in zip(chunk, self._run([blobs[i] for i, _ in chunk], [s for _, s in chunk])):
                    results[i] = pixels
            except Exception:  # noqa: BLE001 - e.g. a corrupt body behind a valid header: Pillow sorts it out
                pass
        rest = [i for i, r in enumerate(results) if r is None]
        for i, item in zip(rest, preprocess_each([blobs[i] for i in rest], self.spec, self.limits, map_fn)):
            results[i] = item
        return results
