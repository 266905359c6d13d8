"""preprocess_image: image bytes -> normalized pixel tensor, with the project's shared preprocessing.

A whole dynamic batch is decoded at once: every upload of every request goes through
`preprocessing.image.preprocess_each` on a thread pool (Pillow releases the GIL while it decodes and
resizes), so a batch of N images costs about N / threads decodes, not N. With the config parameter
`decoder: "dali"` (the GPU configs) the batch is decoded and resized on the GPU by NVIDIA DALI
(`preprocessing.dali_image`, nvJPEG), with the Pillow path for what DALI does not do as we do. A corrupt
upload fails only its own request (INVALID_ARG with the decoder's message); the others get their pixels.
"""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from preprocessing.image import ImageDecodeError, ImageLimits, preprocess_each  # noqa: E402
from runtime.triton_contract import IMAGE_BYTES, PIXEL_VALUES, load_manifest, parameter, rows  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        manifest = load_manifest(args)
        self.spec = manifest.image_spec("clip")
        self.limits = ImageLimits()
        config = json.loads(args["model_config"])
        threads = int(parameter(config, "decode_threads", "0")) or (os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        decoder = parameter(config, "decoder", "pil")
        if decoder == "pil":
            self.decode = lambda blobs: preprocess_each(blobs, self.spec, self.limits, self.pool.map)
        elif decoder in ("dali", "dali_cpu"):
            from preprocessing.dali_image import DaliPreprocessor

            device_id = int(args.get("model_instance_device_id") or 0)
            dali = DaliPreprocessor(self.spec, max(1, int(config.get("max_batch_size") or 1)), "cpu" if decoder == "dali_cpu" else "gpu",
                                    threads, device_id, self.limits)
            self.decode = lambda blobs: dali(blobs, self.pool.map)
        else:
            raise pb_utils.TritonModelException(f"preprocess_image: decoder {decoder!r} is not one of pil, dali, dali_cpu")

    def execute(self, requests):
        responses = [None] * len(requests)
        blobs, owners = [], []
        for index, request in enumerate(requests):
            try:
                items = rows(pb_utils.get_input_tensor_by_name(request, IMAGE_BYTES).as_numpy())
                owners.append((index, len(blobs), len(items)))
                blobs.extend(items)
            except Exception as exc:  # never let one request take the batch down
                responses[index] = _error(f"preprocess_image failed: {type(exc).__name__}: {exc}")
        results = self.decode(blobs) if blobs else []
        for index, start, count in owners:
            mine = results[start : start + count]
            bad = [(i, r) for i, r in enumerate(mine) if isinstance(r, ImageDecodeError)]
            if bad:
                i, exc = bad[0]
                responses[index] = _error(f"image {i}: {exc}" if count > 1 else str(exc), pb_utils.TritonError.INVALID_ARG)
            else:
                pixels = np.stack(mine) if mine else np.zeros((0, 3, *self.spec.size), np.float32)
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor(PIXEL_VALUES, pixels)])
        return responses

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def _error(message, code=None):
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)
