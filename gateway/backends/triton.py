"""Triton Inference Server over gRPC (tritonclient.grpc.aio), calling the ensembles of
model_repository/ by the names in runtime/triton_contract.py. No model weights in the gateway.

Each call sends one batch [N, 1] of TYPE_STRING (bytes / UTF-8 text); Triton's dynamic batcher
merges concurrent requests. Triton errors map to the gateway's kinds: INVALID_ARG from a python
model (a bad image or text) -> ImageDecodeError / TextInputError; anything on the transport ->
Unavailable.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from gateway.errors import NotSupported, Unavailable
from preprocessing.clip_tokenizer import TextInputError
from preprocessing.image import ImageDecodeError
from runtime import triton_contract as tc

log = logging.getLogger("gateway.backends.triton")


class TritonBackend:
    name = "triton"
    accepts_decoded = False  # images travel to Triton as encoded bytes

    def __init__(self, settings) -> None:
        self.settings = settings
        self.url = settings.triton_url
        self.timeout = settings.inference_timeout_s
        self.dim = 0
        self.model = ""
        self._client = None
        self._has_caption = False
        self._has_rerank = False

    @property
    def has_captioner(self) -> bool:
        return self._has_caption and self.settings.caption

    @property
    def has_itm(self) -> bool:
        return self._has_rerank

    def _connect(self):
        import tritonclient.grpc.aio as grpcclient

        if self._client is None:
            self._client = grpcclient.InferenceServerClient(url=self.url)
        return self._client

    async def _reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass

    async def start(self) -> None:
        client = self._connect()
        try:
            meta = await client.get_model_metadata(tc.EMBED_TEXT, as_json=True, client_timeout=self.timeout)
            self.dim = int(meta["outputs"][0]["shape"][-1])
            config = await client.get_model_config(tc.EMBED_TEXT, as_json=True, client_timeout=self.timeout)
            self.model = config["config"].get("parameters", {}).get(tc.MODEL_PARAMETER, {}).get("string_value", "")
            self._has_caption = await client.is_model_ready(tc.CAPTION, client_timeout=self.timeout)
            self._has_rerank = await client.is_model_ready(tc.RERANK, client_timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            await self._reset()
            raise Unavailable(f"triton at {self.url} is unavailable: {exc}") from exc

    async def ping(self) -> bool:
        try:
            client = self._connect()
            if not await client.is_server_ready(client_timeout=2.0):
                return False
            if not self.dim:
                await self.start()
            return True
        except Exception:  # noqa: BLE001
            await self._reset()
            return False

    async def _infer(self, model: str, input_name: str, values: Sequence[bytes], output: str, **more: Sequence[bytes]) -> np.ndarray:
        """One request: [N, 1] BYTES tensors (`input_name` and any `more` of the same N) -> `output`."""
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        tensors = []
        for name, column in {input_name: values, **more}.items():
            batch = np.array([[v] for v in column], dtype=np.object_)
            tensor = grpcclient.InferInput(name, list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch)
            tensors.append(tensor)
        try:
            result = await self._connect().infer(
                model, tensors, outputs=[grpcclient.InferRequestedOutput(output)], client_timeout=self.timeout
            )
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            if "INVALID_ARG" in status:
                # both map to INVALID_ARGUMENT; the kind only names which input was refused
                raise (ImageDecodeError if input_name == tc.IMAGE_BYTES and not more else TextInputError)(exc.message()) from None
            if "UNAVAILABLE" in status or "DEADLINE" in status or status == "":
                await self._reset()
                raise Unavailable(f"triton {model} unavailable: {exc.message()}") from exc
            raise
        return result.as_numpy(output)

    async def _max_batches(self, model: str, input_name: str, values: Sequence[bytes], output: str, limit: int = 64):
        parts = [await self._infer(model, input_name, values[i : i + limit], output) for i in range(0, len(values), limit)]
        return np.concatenate(parts) if parts else None

    async def embed_images(self, blobs: Sequence[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), np.float32)
        for blob in blobs:
            if len(blob) > self.settings.max_image_bytes:
                raise ImageDecodeError(f"image is {len(blob)} bytes; the limit is {self.settings.max_image_bytes}")
        return (await self._max_batches(tc.EMBED_IMAGE, tc.IMAGE_BYTES, list(blobs), tc.EMBEDDING)).astype(np.float32)

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        data = [t.encode("utf-8") for t in texts]
        return (await self._max_batches(tc.EMBED_TEXT, tc.TEXT, data, tc.EMBEDDING)).astype(np.float32)

    async def caption(self, blobs: Sequence[bytes]) -> list[str]:
        if not blobs:
            return []
        if not self.has_captioner:
            return ["" for _ in blobs]
        out = await self._max_batches(tc.CAPTION, tc.IMAGE_BYTES, list(blobs), tc.CAPTION_TEXT, limit=16)
        captions = []
        for row in out:
            value = row[0] if np.ndim(row) else row
            captions.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        return captions

    async def itm(self, image: bytes, texts: Sequence[str]) -> np.ndarray:
        """P(match) of the image with each text: one `rerank` request per 64 texts (texts padded together)."""
        if not self.has_itm:
            raise NotSupported("rerank needs a BLIP ITM model, and this Triton repository serves none")
        if len(image) > self.settings.max_image_bytes:
            raise ImageDecodeError(f"image is {len(image)} bytes; the limit is {self.settings.max_image_bytes}")
        data = [t.encode("utf-8") for t in texts]
        parts = [
            await self._infer(tc.RERANK, tc.IMAGE_BYTES, [image] * len(data[i : i + 64]), tc.SCORE, **{tc.TEXT: data[i : i + 64]})
            for i in range(0, len(data), 64)
        ]
        return np.concatenate(parts).reshape(-1).astype(np.float32) if parts else np.zeros(0, np.float32)

    async def close(self) -> None:
        await self._reset()
