"""A real tritonserver (python backend, CPU rendering of model_repository) against in-process ONNX Runtime.

One server per pytest run, on free ports bound to 127.0.0.1, serving the tiny preset.
"""
from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from preprocessing.image import decode_image, preprocess_images
from runtime import triton_contract as contract
from runtime.clip import ClipEncoder
from triton_runner import TritonServer, TritonStartError
from triton_runner.client import image_input, served_since, settled_counts, text_input
from conftest import encode
from tests.gateway_fixtures import gateway_repository, triton_server  # noqa: F401 (fixtures)

TOLERANCE = 1e-5
QUERIES = ["red leather ankle boots", "  A Blue   Summer DRESS  ", "sac à main en cuir — 皮革手袋", "wireless headphones"]
LONG_TEXT = " ".join(["striped cotton shirt with long sleeves"] * 40)  # far past 77 tokens: truncated as open_clip


@pytest.fixture(scope="session")
def triton(triton_server, gateway_repository, tiny_repository):
    """The CPU rendering of model_repository over the tiny export (the session's one server)."""
    if gateway_repository != tiny_repository:
        pytest.skip("MM_TEST_MODEL_REPOSITORY is set: these tests compare against the tiny export")
    return triton_server


@pytest.fixture(scope="session")
def client(triton):
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        yield client


@pytest.fixture(scope="session")
def encoder(tiny_manifest) -> ClipEncoder:
    return ClipEncoder(tiny_manifest)


@pytest.fixture(scope="session")
def photo_bytes(real_photos) -> list[bytes]:
    rgba = real_photos["astronaut"].convert("RGBA")
    rgba.putalpha(128)
    return [
        encode(real_photos["chelsea"], "JPEG", quality=90),
        encode(real_photos["coffee"], "PNG"),
        encode(real_photos["camera"], "JPEG"),  # grayscale
        encode(rgba, "PNG"),  # transparency composited on white
    ]


def _infer(client, model: str, tensor) -> np.ndarray:
    output = contract.CAPTION_TEXT if model == contract.CAPTION else contract.EMBEDDING
    return client.infer(model, [tensor]).as_numpy(output)


def test_server_is_local_and_serves_the_contract_models(triton, client):
    assert client.is_server_ready()
    for name in (contract.EMBED_IMAGE, contract.EMBED_TEXT, contract.PREPROCESS_IMAGE, contract.TOKENIZE_TEXT,
                 contract.CLIP_IMAGE, contract.CLIP_TEXT):
        assert client.is_model_ready(name), name
    log = triton.log_file.read_text()
    assert f"Started GRPCInferenceService at 127.0.0.1:{triton.grpc_port}" in log
    assert f"Started HTTPService at 127.0.0.1:{triton.http_port}" in log


def test_embed_text_matches_in_process_onnx_runtime(client, encoder):
    texts = [*QUERIES, LONG_TEXT]
    batched = _infer(client, contract.EMBED_TEXT, text_input(texts))
    single = np.concatenate([_infer(client, contract.EMBED_TEXT, text_input([t])) for t in texts])
    expected = encoder.embed_texts(texts)
    assert batched.shape == (len(texts), encoder.embed_dim)
    assert np.abs(batched - expected).max() <= TOLERANCE
    assert np.abs(single - expected).max() <= TOLERANCE


def test_embed_image_matches_in_process_onnx_runtime(client, encoder, photo_bytes):
    got = np.concatenate([_infer(client, contract.EMBED_IMAGE, image_input([blob])) for blob in photo_bytes])
    expected = encoder.embed_image_bytes(photo_bytes)
    assert got.shape == (len(photo_bytes), encoder.embed_dim)
    assert np.abs(got - expected).max() <= TOLERANCE
    both = _infer(client, contract.EMBED_IMAGE, image_input(photo_bytes[:2]))
    assert np.abs(both - expected[:2]).max() <= TOLERANCE


def test_caption_bls_matches_the_in_process_captioner(triton, client, tiny_manifest, photo_bytes):
    if tiny_manifest.blip is None:
        pytest.skip("the tiny export has no BLIP models (preset without a blip section)")
    from runtime.caption import BlipCaptioner

    captioner = BlipCaptioner(tiny_manifest)
    pixels = preprocess_images([decode_image(blob) for blob in photo_bytes], captioner.image_spec)
    expected = captioner.caption(pixels)
    got = [row[0].decode() for row in _infer(client, contract.CAPTION, image_input(photo_bytes))]
    assert got == expected
    assert all(caption.startswith(captioner.prompt) for caption in got)

    def separately(blobs: list[bytes]) -> list:  # separate requests, batched by the caption model's scheduler
        return asyncio.run(_concurrent(triton.grpc_url, len(blobs), 1, lambda i, _: (contract.CAPTION, image_input([blobs[i]]))))

    blobs = [*photo_bytes, b"not an image", *photo_bytes]
    before = settled_counts(client, contract.CAPTION)
    results = separately(blobs)
    used = served_since(client, contract.CAPTION, before, len(blobs))
    good = [r.as_numpy(contract.CAPTION_TEXT)[0][0].decode() for r in results if not isinstance(r, Exception)]
    assert good == expected + expected
    (bad,) = [r for r in results if isinstance(r, Exception)]
    assert bad.status() == "StatusCode.INVALID_ARGUMENT" and "not a supported image" in bad.message()
    assert used["success"] + used["fail"] == len(blobs)  # the python backend counts an error response as served
    assert used["executions"] < len(blobs)  # batched across requests, the bad one included
    assert client.is_model_ready(contract.BLIP_DECODER_STEP)


async def _concurrent(url: str, clients: int, per_client: int, make_request) -> list:
    """`clients` independent gRPC clients, connected first, then each sending `per_client` requests back to back."""
    connected = asyncio.Barrier(clients)  # everyone starts together, once every channel is up

    async def worker(index: int) -> list:
        async with aioclient.InferenceServerClient(url) as aio:
            assert await aio.is_server_live()  # the channel is up before the load starts
            await connected.wait()
            results = []
            for item in range(per_client):
                model, tensor = make_request(index, item)
                try:
                    results.append(await aio.infer(model, [tensor]))
                except InferenceServerException as exc:
                    results.append(exc)
            return results

    per_worker = await asyncio.gather(*(worker(i) for i in range(clients)))
    return [result for results in per_worker for result in results]


def test_dynamic_batching_under_16_concurrent_clients(triton, client, encoder):
    texts = [f"{colour} {item}" for colour in ("red", "blue", "black", "white") for item in ("dress", "boots", "bag", "scarf")]
    before = {m: settled_counts(client, m) for m in (contract.TOKENIZE_TEXT, contract.CLIP_TEXT, contract.EMBED_TEXT)}
    results = asyncio.run(_concurrent(triton.grpc_url, 16, 12, lambda c, i: (contract.EMBED_TEXT, text_input([texts[c]]))))
    used = {m: served_since(client, m, before[m], 192) for m in before}
    assert len(results) == 192 and not any(isinstance(r, Exception) for r in results)
    expected = encoder.embed_texts(texts)
    for index, result in enumerate(results):
        assert np.abs(result.as_numpy(contract.EMBEDDING)[0] - expected[index // 12]).max() <= TOLERANCE
    for model in (contract.TOKENIZE_TEXT, contract.CLIP_TEXT):
        assert used[model]["inferences"] == 192
        assert used[model]["executions"] < used[model]["inferences"], (model, used[model])


def _corrupt_images(photo: bytes) -> dict[str, bytes]:
    png = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(png, "PNG")
    return {
        "empty": b"",
        "garbage": b"definitely not an image",
        "truncated": photo[: len(photo) // 3],
        "header only": png.getvalue()[:33],  # signature + IHDR, no pixel data (a 4x4 image itself is served)
    }


def test_bad_requests_fail_alone_and_their_batch_neighbours_succeed(triton, client, encoder, photo_bytes):
    bad_texts = {"empty": "", "blank": "   \n\t ", "not utf-8": b"\xff\xfe\xfa", "too long": "x" * 10_001}
    bad_images = _corrupt_images(photo_bytes[0])
    requests = [("text", t, True) for t in QUERIES] + [("text", t, False) for t in bad_texts.values()]
    requests += [("image", b, True) for b in photo_bytes] + [("image", b, False) for b in bad_images.values()]
    requests = requests * 2

    def make(index: int, _item: int):
        kind, payload, _ = requests[index]
        if kind == "text":
            return contract.EMBED_TEXT, text_input([payload])
        return contract.EMBED_IMAGE, image_input([payload])

    before = settled_counts(client, contract.TOKENIZE_TEXT)
    results = asyncio.run(_concurrent(triton.grpc_url, len(requests), 1, make))
    text_requests = sum(1 for kind, _, _ in requests if kind == "text")
    tokenize = served_since(client, contract.TOKENIZE_TEXT, before, text_requests)
    for (kind, payload, good), result in zip(requests, results):
        if good:
            assert not isinstance(result, Exception), (kind, result)
            expected = encoder.embed_texts([payload]) if kind == "text" else encoder.embed_image_bytes([payload])
            assert np.abs(result.as_numpy(contract.EMBEDDING) - expected).max() <= TOLERANCE
        else:
            assert isinstance(result, InferenceServerException), (kind, payload[:20])
            assert result.status() == "StatusCode.INVALID_ARGUMENT"
    messages = [r.message() for r in results if isinstance(r, Exception)]
    assert any("text is empty" in m for m in messages)
    assert any("not valid UTF-8" in m for m in messages)
    assert any("the limit is 10000" in m for m in messages)
    assert any("image is empty" in m for m in messages)
    assert any("not a supported image" in m or "corrupt or truncated" in m for m in messages)
    assert sum("corrupt or truncated" in m for m in messages) >= 2  # truncated photo and header-only PNG
    assert tokenize["success"] + tokenize["fail"] == text_requests
    assert tokenize["executions"] < text_requests  # good and bad requests shared executions
    assert client.is_server_ready() and client.is_model_ready(contract.EMBED_TEXT)


def test_long_text_is_truncated_like_open_clip(client, encoder):
    longer = LONG_TEXT + " and a completely different ending about red shoes"
    a, b = (_infer(client, contract.EMBED_TEXT, text_input([t])) for t in (LONG_TEXT, longer))
    assert np.abs(a - b).max() == 0.0  # only the first 76 tokens (+ EOT) count
    ids = encoder.tokenizer([longer])
    assert ids.shape[1] == 77 and ids[0, -1] == encoder.tokenizer.eot_token_id


def test_launcher_raises_with_the_log_tail_when_the_server_cannot_start(tmp_path):
    broken = tmp_path / "repository" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 4\ninput [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
                                         'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n')
    (broken / "1" / "model.py").write_text("raise ImportError('this model is broken on purpose')\n")
    server = TritonServer(tmp_path / "repository", workdir=tmp_path, startup_timeout=60)
    with pytest.raises(TritonStartError, match="broken on purpose"):
        server.start()
    assert server.process is None


def test_rerank_ensemble_matches_the_in_process_itm_scorer(client, tiny_manifest, photo_bytes):
    if not tiny_manifest.has_model(contract.BLIP_ITM):
        pytest.skip("the tiny export has no BLIP ITM model")
    from runtime.itm import BlipItmScorer

    scorer = BlipItmScorer(tiny_manifest)
    texts = ["a red dress", "wireless headphones with a very long description of the product", "shoes"]
    image = photo_bytes[0]
    expected = scorer.score_texts(preprocess_images([decode_image(image)], scorer.image_spec), texts)
    inputs = [image_input([image] * len(texts)), text_input(texts)]
    got = client.infer(contract.RERANK, inputs).as_numpy(contract.SCORE).reshape(-1)
    assert np.abs(got - expected).max() <= TOLERANCE and np.all((0 <= got) & (got <= 1))
    with pytest.raises(InferenceServerException) as info:
        client.infer(contract.RERANK, [image_input([b"junk"] * 2), text_input(["a", "b"])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "not a supported image" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer(contract.RERANK, [image_input([image]), text_input(["   "])])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "text is empty" in info.value.message()
