"""preprocess_image: image bytes -> normalized pixel tensor, with the project's shared preprocessing.

Each request is decoded on its own, so a corrupt upload fails only its own request (INVALID_ARG with
the decoder's message) while the other requests of the same dynamic batch get their pixels.
"""
import os
import sys

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import triton_python_backend_utils as pb_utils  # noqa: E402

from preprocessing.image import ImageDecodeError, ImageLimits, decode_image, preprocess_images  # noqa: E402
from triton_runner.model_support import load_manifest, rows  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        manifest = load_manifest(args)
        self.spec = manifest.image_spec("clip")
        self.limits = ImageLimits()

    def execute(self, requests):
        responses = []
        for request in requests:
            blobs = rows(pb_utils.get_input_tensor_by_name(request, "IMAGE_BYTES").as_numpy())
            try:
                images = []
                for index, blob in enumerate(blobs):
                    try:
                        images.append(decode_image(blob, self.limits))
                    except ImageDecodeError as exc:
                        prefix = f"image {index}: " if len(blobs) > 1 else ""
                        raise ImageDecodeError(f"{prefix}{exc}") from None
                pixels = preprocess_images(images, self.spec)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("pixel_values", pixels)]))
            except ImageDecodeError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as exc:  # never let one request take the batch down
                error = pb_utils.TritonError(f"preprocess_image failed: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses

    def finalize(self):
        self.spec = None
