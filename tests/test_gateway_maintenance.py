"""Store maintenance against real Milvus Lite files: recorded fused weights, `rebuild-fused`,
`migrate` from the round-1 schema, and what the gateway does at start with each."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway import fusion
from gateway.filters import ProductFilter
from gateway.maintenance import main as maintenance
from gateway.rows import Channels, build_row, present_channels
from gateway.store import MilvusConfig, MilvusStore, SchemaMismatch
from retrieval.v1 import retrieval_pb2 as pb
from tests.gateway_fixtures import png, start_gateway

ROOT = Path(__file__).resolve().parents[1]
DIM = 8
OLD = {"image": 0.5, "title": 0.3, "caption": 0.2}
NEW = {"image": 0.2, "title": 0.6, "caption": 0.2}


def unit(rng):
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def products(rng, n=6):
    out = []
    for i in range(n):
        product = pb.Product(id=f"m{i}", title="" if i == 0 else f"thing {i}", brand="acme")
        vectors = {"image": unit(rng), "caption": unit(rng)}
        if product.title:
            vectors["title"] = unit(rng)
        out.append((product, Channels(vectors, caption="a thing", tags=[])))
    return out


def store_at(path, collection="c", dim=DIM) -> MilvusStore:
    store = MilvusStore(MilvusConfig(uri=str(path), collection=collection, dim=dim, timeout_s=10))
    store.connect()
    return store


def test_rebuild_fused_rewrites_every_fused_vector_from_the_channels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.db"
    store = store_at(path)
    store.record_fused_weights(OLD)
    items = products(rng)
    rows = []
    for product, channels in items:
        fused = fusion.fused_vectors({c: v[None] for c, v in {**{"title": np.zeros(DIM)}, **channels.vectors}.items()}, [set(channels.vectors)], OLD)[0]
        rows.append(build_row(product, channels, fused, DIM))
    store.upsert(rows)
    store.close()

    args = ["--store-uri", str(path), "--collection", "c", *(f"--weight-{c}={w}" for c, w in NEW.items())]
    assert maintenance(["rebuild-fused", *args]) == 0

    store = store_at(path, dim=0)
    assert store.fused_weights == pytest.approx(NEW)
    for product, channels in items:
        row = store.get([product.id], include_vectors=True)[0]
        have = present_channels(row)
        assert ("title" in have) == bool(product.title)
        total = sum(NEW[c] for c in channels.vectors)
        expected = sum(NEW[c] * channels.vectors[c] for c in channels.vectors) / total
        assert np.allclose(row["fused_vec"], expected, atol=1e-6)
    assert [i for i, *_ in store.keyword("acme", 10, ProductFilter())]  # the keyword field survived the rewrite
    store.close()


def _old_schema_collection(path, rows):
    """The round-1 collection: COSINE, normalized fused vectors, no channel mask, no keyword field."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(path))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description="products (gateway/store.py)")
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
    for name in ("title", "description", "category", "brand", "caption", "image_uri"):
        schema.add_field(name, DataType.VARCHAR, max_length=1024)
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("in_stock", DataType.BOOL)
    schema.add_field("meta", DataType.JSON)
    for name in ("image_vec", "title_vec", "caption_vec", "fused_vec"):
        schema.add_field(name, DataType.FLOAT_VECTOR, dim=DIM)
    params = client.prepare_index_params()
    for name in ("image_vec", "title_vec", "caption_vec", "fused_vec"):
        params.add_index(field_name=name, index_type="FLAT", metric_type="COSINE")
    client.create_collection("c", schema=schema, index_params=params)
    if rows:
        client.insert("c", rows)
    client.close()


def test_old_collection_is_refused_then_migrated(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "old.db"
    rows = []
    for i in range(5):
        vec = {n: unit(rng).tolist() for n in ("image_vec", "title_vec", "caption_vec", "fused_vec")}
        rows.append({"id": f"o{i}", "title": "" if i == 0 else f"Old boots {i}", "description": "", "category": "boots", "brand": "b",
                     "caption": "", "image_uri": "", "price": 1.0, "in_stock": True, "meta": {"tags": [], "attributes": {}}, **vec})
    _old_schema_collection(path, rows)

    with pytest.raises(SchemaMismatch, match="gateway.maintenance migrate"):
        store_at(path)
    assert maintenance(["migrate", "--store-uri", str(path), "--collection", "c", *(f"--weight-{c}={w}" for c, w in OLD.items())]) == 0

    store = store_at(path, dim=0)
    assert store.fused_weights == pytest.approx(OLD)  # the configured weights
    migrated = {r["id"]: r for r in store.get([r["id"] for r in rows], include_vectors=True)}
    assert set(migrated) == {r["id"] for r in rows}
    # o0 had no title and no caption: round 1 embedded its id there; now only the image channel is left
    assert present_channels(migrated["o0"]) == {"image", "keyword"}
    assert np.allclose(migrated["o0"]["fused_vec"], rows[0]["image_vec"], atol=1e-6)
    full = migrated["o3"]
    expected = (OLD["image"] * np.asarray(rows[3]["image_vec"]) + OLD["title"] * np.asarray(rows[3]["title_vec"])) / (OLD["image"] + OLD["title"])
    assert np.allclose(full["fused_vec"], expected, atol=1e-6)
    assert [i for i, *_ in store.keyword("boots 3", 1, ProductFilter())] == ["o3"]
    store.close()


@pytest.mark.slow
def test_gateway_start_sees_changed_weights_and_old_schema(tiny_repository, tmp_path):
    store = str(tmp_path / "g.db")
    first = start_gateway(tiny_repository, store, tmp_path)
    try:
        ok = first.stub.UpsertProducts(iter(pb.UpsertProductsRequest(product=pb.Product(id=f"g{i}", image=png(i), title=f"item {i}")) for i in range(4)))
        assert ok.ok == 4
        assert first.stub.Search(pb.SearchRequest(text="item", top_k=3)).mode == pb.SEARCH_MODE_FUSED
    finally:
        first.stop()
    changed = ["--weight-image", "0.2", "--weight-title", "0.6", "--weight-caption", "0.2"]
    second = start_gateway(tiny_repository, store, tmp_path, *changed)
    try:
        response = second.stub.Search(pb.SearchRequest(text="item", top_k=3))
        assert response.mode == pb.SEARCH_MODE_MULTI_VECTOR  # the stored fused vectors have other weights: exact scoring
        assert (response.weights.image, response.weights.title) == pytest.approx((0.2, 0.6))
    finally:
        second.stop()
    assert "rebuild-fused" in second.log()
    # as a user runs it (and in its own process: Milvus Lite keeps the file locked while a process has it open)
    done = subprocess.run([sys.executable, "-m", "gateway.maintenance", "rebuild-fused", "--store-uri", store, *changed],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "rebuilt the fused vectors of 4 products" in done.stdout, done.stderr
    third = start_gateway(tiny_repository, store, tmp_path, *changed)
    try:
        assert third.stub.Search(pb.SearchRequest(text="item", top_k=3)).mode == pb.SEARCH_MODE_FUSED
    finally:
        third.stop()

    old = tmp_path / "old.db"
    # in another process: Milvus Lite keeps a file locked while the process that opened it lives
    script = f"from tests.test_gateway_maintenance import _old_schema_collection; _old_schema_collection({str(old)!r}, [])"
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=120)
    refused = start_gateway(tiny_repository, str(old), tmp_path, "--collection", "c", wait=False)
    assert refused.proc.wait(timeout=120) == 2
    assert "gateway.maintenance migrate" in refused.log()
