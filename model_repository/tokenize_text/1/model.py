"""tokenize_text: UTF-8 text -> CLIP token ids, with the project's shared text tokenizer (CLIP BPE or the
model's Hugging Face tokenizer.json, as the manifest says).

Text longer than the context is truncated as open_clip truncates it (EOT kept last). Empty or
whitespace-only text, non-UTF-8 bytes and text over the character limit fail only their own request
(INVALID_ARG with the tokenizer's message); the rest of the batch is served.
"""
import os
import sys

# The python backend stub ignores PYTHONPATH; honour it so the project imports without an install.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

import triton_python_backend_utils as pb_utils  # noqa: E402

from preprocessing.clip_tokenizer import TextInputError  # noqa: E402
from preprocessing.text import load_text_tokenizer  # noqa: E402
from runtime.triton_contract import INPUT_IDS, TEXT, decode_utf8, load_manifest, rows  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        manifest = load_manifest(args)
        self.tokenizer = load_text_tokenizer(manifest.repository, manifest.clip["tokenizer"])

    def execute(self, requests):
        responses = [None] * len(requests)
        texts, owners = [], []
        for index, request in enumerate(requests):
            try:
                items = decode_utf8(rows(pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()))
                items = [self.tokenizer.validate(text) for text in items]  # cleaned once, here
                texts.extend(items)
                owners.append((index, len(items)))
            except TextInputError as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses[index] = pb_utils.InferenceResponse(error=error)
            except Exception as exc:  # never let one request take the batch down
                error = pb_utils.TritonError(f"tokenize_text failed: {type(exc).__name__}: {exc}")
                responses[index] = pb_utils.InferenceResponse(error=error)
        if owners:  # one tokenizer call for every valid text of the batch
            try:
                ids = self.tokenizer.encode_cleaned(texts)
                offset = 0
                for index, count in owners:
                    tensor = pb_utils.Tensor(INPUT_IDS, ids[offset : offset + count])
                    responses[index] = pb_utils.InferenceResponse([tensor])
                    offset += count
            except Exception as exc:
                error = pb_utils.TritonError(f"tokenize_text failed: {type(exc).__name__}: {exc}")
                for index, _ in owners:
                    responses[index] = pb_utils.InferenceResponse(error=error)
        return responses

    def finalize(self):
        self.tokenizer = None
