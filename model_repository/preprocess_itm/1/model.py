"""preprocess_itm: (image bytes, text) pairs -> blip_itm's pixel_values, input_ids, attention_mask.

The same setup as the in-process scorer (`runtime.itm.ItmSetup`: the ITM image spec, max_length and
the one BLIP tokenizer from the manifest). Each request is one re-ranked search: its texts are
tokenized and padded together (as the local backend does), and an image that repeats across its rows
is decoded once. A bad image or text fails only its own request (INVALID_ARG).
"""
import os
import sys

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from preprocessing.clip_tokenizer import TextInputError  # noqa: E402
from preprocessing.image import ImageDecodeError, ImageLimits, preprocess_each  # noqa: E402
from runtime.itm import ItmSetup  # noqa: E402
from runtime.triton_contract import (  # noqa: E402
    ATTENTION_MASK,
    IMAGE_BYTES,
    INPUT_IDS,
    PIXEL_VALUES,
    TEXT,
    decode_utf8,
    load_manifest,
    rows,
)


class TritonPythonModel:
    def initialize(self, args):
        self.setup = ItmSetup.from_manifest(load_manifest(args))
        self.limits = ImageLimits()

    def _one(self, request):
        blobs = rows(pb_utils.get_input_tensor_by_name(request, IMAGE_BYTES).as_numpy())
        texts = decode_utf8(rows(pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()))
        if len(blobs) != len(texts):
            raise TextInputError(f"{len(blobs)} images and {len(texts)} texts: send one image per text")
        unique = list(dict.fromkeys(blobs))
        decoded = dict(zip(unique, preprocess_each(unique, self.setup.image_spec, self.limits)))
        for item in decoded.values():
            if isinstance(item, ImageDecodeError):
                raise item
        input_ids, attention_mask = self.setup.encode(texts)
        pixels = np.stack([decoded[blob] for blob in blobs])
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(PIXEL_VALUES, pixels), pb_utils.Tensor(INPUT_IDS, input_ids), pb_utils.Tensor(ATTENTION_MASK, attention_mask)]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except (ImageDecodeError, TextInputError) as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
            except Exception as exc:  # never let one request take the batch down
                error = pb_utils.TritonError(f"preprocess_itm failed: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        self.setup = None
