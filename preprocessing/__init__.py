"""Preprocessing shared by export, the Triton python models and the gateway: one source of truth.

Torch-free on purpose (numpy, Pillow, tokenizers) so that serving processes never import torch.
"""
from preprocessing.image import (
    ImageDecodeError,
    ImageLimits,
    ImageSpec,
    decode_image,
    preprocess_images,
)
from preprocessing.clip_tokenizer import ClipTokenizer, TextInputError

__all__ = [
    "ClipTokenizer",
    "ImageDecodeError",
    "ImageLimits",
    "ImageSpec",
    "TextInputError",
    "decode_image",
    "preprocess_images",
]
