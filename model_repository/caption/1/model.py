"""caption: image bytes -> BLIP caption, as a BLS model over blip_vision / blip_decoder_init / _step.

The requests of one dynamic batch are captioned together: one vision call, one decoding loop. The
loop is `runtime.caption.greedy_search`, shared with the in-process `BlipCaptioner`; here its
`run_init` / `run_step` callables are BLS requests to the decoder models, so captions are identical
to the local backend's. Bad images get their own INVALID_ARG error; the others are captioned.
"""
import os
import sys

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from preprocessing.image import ImageDecodeError, ImageLimits, preprocess_each  # noqa: E402
from runtime.caption import CaptionSetup, greedy_search  # noqa: E402
from runtime.triton_contract import (  # noqa: E402
    BLIP_DECODER_INIT,
    BLIP_DECODER_STEP,
    BLIP_VISION,
    CAPTION_TEXT,
    IMAGE_BYTES,
    IMAGE_EMBEDS,
    PIXEL_VALUES,
    load_manifest,
    rows,
    string_tensor,
)


class TritonPythonModel:
    def initialize(self, args):
        self.setup = CaptionSetup.from_manifest(load_manifest(args))
        self.spec, self.tokenizer = self.setup.spec, self.setup.tokenizer
        self.prompt_ids = self.setup.prompt_ids()
        self.limits = ImageLimits()
        # GPU deployment: ask for the graphs' outputs in CPU memory (the loop works on numpy).
        self.memory = {}
        if hasattr(pb_utils, "PreferredMemory"):
            self.memory = {"preferred_memory": pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}

    def _call(self, model, feeds, outputs):
        request = pb_utils.InferenceRequest(
            model_name=model,
            requested_output_names=outputs,
            inputs=[pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in feeds.items()],
            **self.memory,
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def _run_init(self, feeds):
        return self._call(BLIP_DECODER_INIT, feeds, self.spec.init_outputs())

    def _run_step(self, feeds):
        return self._call(BLIP_DECODER_STEP, feeds, self.spec.step_outputs())

    def execute(self, requests):
        responses = [None] * len(requests)
        pixels, owners = [], []
        for index, request in enumerate(requests):
            try:
                blobs = rows(pb_utils.get_input_tensor_by_name(request, IMAGE_BYTES).as_numpy())
                items = preprocess_each(blobs, self.setup.image_spec, self.limits)
                bad = [item for item in items if isinstance(item, ImageDecodeError)]
                if bad:
                    raise bad[0]
                pixels.append(np.stack(items))
                owners.append((index, len(items)))
            except ImageDecodeError as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
            except Exception as exc:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"caption failed: {type(exc).__name__}: {exc}"))
        if owners:
            try:
                captions = self._caption(np.concatenate(pixels))
                offset = 0
                for index, count in owners:
                    tensor = pb_utils.Tensor(CAPTION_TEXT, string_tensor(captions[offset : offset + count]))
                    responses[index] = pb_utils.InferenceResponse([tensor])
                    offset += count
            except Exception as exc:  # a failing graph call fails this batch's requests, not the server
                error = pb_utils.TritonError(f"caption failed: {type(exc).__name__}: {exc}")
                for index, _ in owners:
                    responses[index] = pb_utils.InferenceResponse(error=error)
        return responses

    def _caption(self, pixel_values):
        image_embeds = self._call(BLIP_VISION, {PIXEL_VALUES: pixel_values}, [IMAGE_EMBEDS])[IMAGE_EMBEDS]
        ids = greedy_search(
            self._run_init,
            self._run_step,
            self.spec,
            image_embeds,
            self.prompt_ids,
            self.setup.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return [self.tokenizer.decode(row) for row in ids.tolist()]

    def finalize(self):
        self.tokenizer = None
