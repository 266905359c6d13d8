"""Fixtures of the gateway tests: a real `python -m gateway` subprocess on a free port, a catalog.

Import the fixtures into a test module with `from tests.gateway_fixtures import *` (pytest finds
them there). The gateway runs once per session and backend - `local` (ONNX Runtime in-process) and `triton` (a real
tritonserver serving the CPU rendering, one per session: `triton_server`) - on the tiny export
(`tiny_repository` of tests/conftest.py, or MM_TEST_MODEL_REPOSITORY to reuse an export) and a
Milvus Lite file in tmp. MM_TEST_BACKENDS=local (or triton) runs one of them.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway import launcher  # noqa: E402
from gateway.launcher import free_port, wait_health  # noqa: E402,F401 (re-exported for the tests)
from retrieval.v1 import retrieval_pb2 as pb  # noqa: E402
from retrieval.v1 import retrieval_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["gateway_repository", "triton_server", "gateway", "catalog", "pb", "free_port", "png", "GatewayProcess", "start_gateway", "wait_health"]


def png(seed: int, size: int = 48) -> bytes:
    """A distinct product-like picture per seed: a coloured background with a block pattern."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[:] = base
    blocks = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    pixels[:] = np.kron(blocks, np.ones((size // 6 + 1, size // 6 + 1, 1), dtype=np.uint8))[:size, :size]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class GatewayProcess(launcher.GatewayProcess):
    """The launcher's process plus a channel and a stub for the tests."""

    @classmethod
    def of(cls, process: launcher.GatewayProcess) -> "GatewayProcess":
        gateway = cls(**{f: getattr(process, f) for f in ("proc", "address", "port", "metrics_port", "store_uri", "log_path",
                                                            "credentials", "server_name")})
        gateway.channel = gateway.open_channel()
        gateway.stub = pb_grpc.RetrievalStub(gateway.channel)
        return gateway


def start_gateway(repository: Path, store_uri: str, workdir: Path, *extra: str, wait: bool = True, **options) -> GatewayProcess:
    """A gateway for the tests: fast health probe, short store timeout, one inference thread."""
    args = ["--probe-interval-s", "0.5", "--store-timeout-s", "3", "--inference-threads", "1", *extra]
    process = launcher.start(repository, store_uri, workdir, args, metrics_port=options.pop("metrics_port", None), cwd=workdir,
                             env={"MM_ORT_THREADS": "1"}, wait=wait, **options)
    return GatewayProcess.of(process)


def ids(response) -> list[str]:
    return [hit.product.id for hit in response.hits]


def embed_image(stub, image: bytes) -> np.ndarray:
    return np.asarray(stub.Embed(pb.EmbedRequest(images=[image])).image_vectors[0].values, dtype=np.float32)


def embed_text(stub, text: str) -> np.ndarray:
    return np.asarray(stub.Embed(pb.EmbedRequest(texts=[text])).text_vectors[0].values, dtype=np.float32)


def stored_vectors(stub, product_id: str) -> dict[str, np.ndarray]:
    """The present channels' vectors (an absent channel comes back empty and is left out) and the fused vector."""
    item = stub.GetProducts(pb.GetProductsRequest(ids=[product_id], include_vectors=True)).products[0]
    out = {name: np.asarray(getattr(item.vectors, name), dtype=np.float32) for name in ("image", "title", "caption", "fused")}
    return {k: v for k, v in out.items() if v.size}


@pytest.fixture(scope="session")
def gateway_repository(request) -> Path:
    """The model repository the gateway serves (MM_TEST_MODEL_REPOSITORY, else the session's tiny export)."""
    override = os.environ.get("MM_TEST_MODEL_REPOSITORY")
    if override:
        return Path(override)
    return request.getfixturevalue("tiny_repository")


@pytest.fixture(scope="session")
def triton_server(gateway_repository, tmp_path_factory):
    """A real tritonserver on the CPU rendering of the gateway's repository (one per session)."""
    pytest.importorskip("pytriton")  # the tritonserver binary ships in nvidia-pytriton
    from triton_runner import TritonServer
    from triton_runner.render import render_cpu

    work = tmp_path_factory.mktemp("triton")
    render_cpu(gateway_repository, work / "repository")
    with TritonServer(work / "repository", workdir=work, startup_timeout=120) as server:
        yield server


BACKENDS = [b for b in os.environ.get("MM_TEST_BACKENDS", "local,triton").split(",") if b]
# The session gateway fuses three channels (the shipped defaults rank text and image queries by the image
# channel alone, which would leave the fusion mechanics untested); composed queries fall back to these too.
MIXED_WEIGHTS = ("--weight-image", "0.5", "--weight-title", "0.3", "--weight-caption", "0.2", "--composed-query-weights", "")


@pytest.fixture(scope="session", params=BACKENDS)
def gateway(request, gateway_repository, tmp_path_factory):
    """The gateway on each backend in turn: the same tests run against both."""
    workdir = tmp_path_factory.mktemp(f"gateway_{request.param}")
    extra = list(MIXED_WEIGHTS)
    if request.param == "triton":
        extra += ["--triton-url", request.getfixturevalue("triton_server").grpc_url, "--inference-timeout-s", "30"]
    process = start_gateway(gateway_repository, str(workdir / "products.db"), workdir, *extra, backend=request.param)
    yield process
    process.stop()


CATEGORIES = ["shoes", "dress", "bag"]
BRANDS = ["acme", 'quote"brand', "back\\slash"]


@pytest.fixture(scope="session")
def catalog(gateway) -> dict[str, pb.Product]:
    """12 products upserted once; returned by id."""
    products = {}
    for i in range(12):
        product = pb.Product(
            id=f"sku-{i:02d}",
            image=png(i),
            title=f"product number {i}",
            description=f"a {CATEGORIES[i % 3]} for tests",
            price=10.0 * (i + 1),
            category=CATEGORIES[i % 3],
            brand=BRANDS[i % 3],
            attributes={"size": "SML"[i % 3], "colour": ["red", "blue"][i % 2]},
            in_stock=i % 4 != 0,
            tags=["sale"] if i < 6 else [],
            image_uri=f"https://example.com/{i}.png",
        )
        products[product.id] = product
    response = gateway.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=p) for p in products.values()), timeout=120)
    assert response.ok == len(products), response
    return products
