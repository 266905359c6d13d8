"""Client pieces that need no gateway: catalog parsing, resume state, request building, retry policy, report maths."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from client.catalog import count_rows, read_catalog, safe_id
from client.load import StepResult
from client.load_report import as_csv, as_json, table
from client.messages import SearchFilters, parse_weights, search_request
from client.resume import ResumeState, default_state_path
from client.retry import RetryPolicy
from client.tables import format_table
from client.workload import Workload, parse_mix, synthetic_images
from retrieval.v1 import retrieval_pb2 as pb


def _image(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def test_jsonl_rows_become_products(tmp_path):
    _image(tmp_path / "img" / "a.png")
    _image(tmp_path / "img" / "b.png")
    lines = [
        {"id": "p1", "image": "img/a.png", "title": "Red boot", "price": "$79.90", "category": "Boots", "brand": "X",
         "tags": "leather|red", "in_stock": "no", "colour": "red", "attributes": {"size": 42}},
        {"image": "img/b.png", "title": "No id", "price": 12},
        {"id": "p3", "image": "img/missing.png"},
        {"id": "p4", "image": "img/a.png", "price": "cheap"},
    ]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n{not json}\n")
    rows = list(read_catalog(catalog))
    assert count_rows(catalog) == 5
    assert [r.line for r in rows] == [1, 2, 3, 4, 6]
    product = rows[0].product()
    assert product.id == "p1" and product.price == pytest.approx(79.9) and not product.in_stock
    assert list(product.tags) == ["leather", "red"]
    assert dict(product.attributes) == {"size": "42", "colour": "red"}
    assert product.image == (tmp_path / "img" / "a.png").read_bytes()
    assert rows[1].id == "b" and not rows[1].product().HasField("in_stock")
    assert "image file not found" in rows[2].error
    assert "price is not a number" in rows[3].error
    assert "bad JSON" in rows[4].error
    # fingerprints follow content: a changed row gets a new one
    again = list(read_catalog(catalog))
    assert [r.fingerprint for r in again] == [r.fingerprint for r in rows]


def test_csv_and_folder_catalogs(tmp_path):
    _image(tmp_path / "shop" / "shoes" / "red_boot-1.png")
    _image(tmp_path / "shop" / "bag.jpg".replace(".jpg", ".png"))
    catalog = tmp_path / "c.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "image_path", "title", "price", "material"])
        writer.writerow(["s-1", "shop/bag.png", "Bag", "20", "canvas"])
        writer.writerow(["s-2", "shop/bag.png", "Bag 2", "", ""])
    rows = list(read_catalog(catalog))
    assert [r.id for r in rows] == ["s-1", "s-2"]
    assert dict(rows[0].product().attributes) == {"material": "canvas"}
    assert not rows[1].product().HasField("price")
    folder_rows = list(read_catalog(tmp_path / "shop"))
    assert {r.id for r in folder_rows} == {"bag", "shoes/red_boot-1"}
    boot = next(r for r in folder_rows if r.id.startswith("shoes"))
    assert boot.product().category == "shoes" and boot.product().title == "red boot 1"
    assert safe_id("a b/c?d") == "a-b/c-d"


def test_resume_state_round_trip(tmp_path):
    catalog = tmp_path / "c.jsonl"
    path = default_state_path(catalog)
    assert path.name == "c.jsonl.index-state"
    state = ResumeState(path, "127.0.0.1:1").load()
    state.record([("a", "f1"), ("b", "f2")])
    state.record([("c", "f3")])
    state.close()
    with path.open("a") as handle:
        handle.write('{"id": "torn')  # killed mid-write
    again = ResumeState(path, "127.0.0.1:1").load()
    assert again.done == {"a": "f1", "b": "f2", "c": "f3"}
    assert again.is_done("a", "f1") and not again.is_done("a", "changed")
    other = ResumeState(path, "10.0.0.1:1").load()
    assert other.done == {} and "written for 127.0.0.1:1" in other.note


def test_search_request_building():
    request = search_request(
        "red boots", b"\x89PNG", top_k=5, weights=parse_weights("image=0.6,caption=0.1"),
        filters=SearchFilters(categories=["Boots"], max_price=80, attributes={"colour": ["red"]}, in_stock=True),
        mode="multi_vector", combine="rrf", text_weight=0.3,
    )
    assert request.mode == pb.SEARCH_MODE_MULTI_VECTOR and request.combine == pb.COMBINE_RRF
    assert request.weights.HasField("image") and not request.weights.HasField("title")
    assert request.filters.max_price == 80 and not request.filters.HasField("min_price")
    assert request.filters.attributes[0].key == "colour" and request.text_weight == pytest.approx(0.3)
    assert parse_weights("0.5,0.3,0.2") == {"image": 0.5, "title": 0.3, "caption": 0.2}
    with pytest.raises(ValueError):
        parse_weights("colour=1")


def test_retry_policy_only_unavailable_and_bounded():
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, max_backoff=0.25)
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 1)
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 3)
    for code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL):
        assert not policy.should_retry(code, 1)
    waits = [policy.backoff(a, random.Random(a)) for a in range(1, 6)]
    assert all(0 <= w <= 0.25 for w in waits)
    assert len(list(policy.delays())) == 2


def test_workload_mix_and_load_report_maths():
    mix = parse_mix("text=2,image=1,composed=1")
    assert mix == {"text": 0.5, "image": 0.25, "composed": 0.25}
    with pytest.raises(ValueError):
        parse_mix("video=1")
    workload = Workload(mix=mix, images=synthetic_images(3), seed=1)
    kinds = [workload.next()[0] for _ in range(400)]
    assert 150 < kinds.count("text") < 250
    step = StepResult("concurrency", 4, sent=10, ok=8, errors={"UNAVAILABLE": 2}, seconds=2.0,
                      latencies_ms=np.arange(1, 9, dtype=float), kinds={})
    data = json.loads(as_json([step], {"address": "x"}))["steps"][0]
    assert data["ok"] + data["errors"] == data["sent"] and data["qps"] == 4.0
    assert data["latency_ms"]["p50"] == 4.5 and data["latency_ms"]["max"] == 8.0
    assert "c=4" in table([step]) and "UNAVAILABLE 2" in table([step])
    assert as_csv([step]).splitlines()[1].startswith("concurrency,4,10,8,2,2.0,4.0,4.5")


def test_table_alignment():
    text = format_table(["#", "title"], [[1, "a"], [10, "x" * 60]], max_width=10)
    lines = text.splitlines()
    assert lines[2].startswith(" 1") and lines[3].endswith("…") and len(lines[3]) == len("10  ") + 10
