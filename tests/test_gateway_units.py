"""Unit tests of the gateway's pure parts: filters (escaping against a real Milvus Lite), settings.
Fusion's formulas are tested in tests/test_fusion.py."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.errors import InvalidInput
from gateway.filters import ProductFilter, quote
from gateway.settings import load_settings


# -- filters -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, literal",
    [
        ("shoes", '"shoes"'),
        ('he said "hi"', r'"he said \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ('" or 1==1 or "', r'"\" or 1==1 or \""'),
        ('\\" or true or \\"', r'"\\\" or true or \\\""'),
        ("tab\there\x01", '"tab\there\x01"'),
        ("ünï 😀", '"ünï 😀"'),
    ],
)
def test_quote_escapes(value, literal):
    assert quote(value) == literal


def test_line_breaks_are_refused():
    with pytest.raises(InvalidInput, match="line break"):
        quote("two\nlines")


def test_expression_of_typed_filters():
    flt = ProductFilter(
        categories=["dress"], brands=["a", "b"], min_price=1, max_price=2.5, tags_any=["red"], tags_all=["x", "y"],
        in_stock=True, ids=["p1"], attributes={"size": ["M"]},
    )
    flt.validate(["size"])
    assert flt.expression() == (
        '(id in ["p1"]) and (category in ["dress"]) and (brand in ["a", "b"]) and (price >= 0.0) and (price >= 1.0) and '
        '(price <= 2.5) and (in_stock == true) and (json_contains_any(meta["tags"], ["red"])) and '
        '(json_contains_all(meta["tags"], ["x", "y"])) and (meta["attributes"]["size"] in ["M"])'
    )
    assert ProductFilter().expression() == ""


@pytest.mark.parametrize(
    "flt, words",
    [
        (ProductFilter(attributes={"owner": ["x"]}), "unknown filter field 'attributes.owner'"),
        (ProductFilter(attributes={'size"]': ["x"]}), "unknown filter field"),
        (ProductFilter(min_price=float("nan")), "min_price"),
        (ProductFilter(max_price=-1), "max_price"),
        (ProductFilter(min_price=5, max_price=1), "greater than max_price"),
        (ProductFilter(categories=["x"] * 101), "limit is 100"),
    ],
)
def test_filter_validation_names_the_field(flt, words):
    with pytest.raises(InvalidInput) as info:
        flt.validate(["size", 'size"]'])
    assert words in str(info.value)


TRICKY = ["plain", 'he said "hi"', "back\\slash", '" or 1==1 or "', '\\" or true or \\"', "it's", "ünï 😀", "tab\there", "x\" or id != \""]


@pytest.fixture(scope="module")
def milvus_store(tmp_path_factory):
    from gateway.store import MilvusConfig, MilvusStore

    store = MilvusStore(MilvusConfig(uri=str(tmp_path_factory.mktemp("filters") / "f.db"), collection="f", dim=4, timeout_s=10))
    store.connect()
    rows = []
    for i, value in enumerate(TRICKY):
        vec = np.ones(4, dtype=np.float32) / 2
        rows.append({
            "id": f"r{i}", "title": value, "description": "", "category": value, "brand": "b", "price": float(i),
            "in_stock": i % 2 == 0, "caption": "", "image_uri": "", "meta": {"tags": [value], "attributes": {"size": value}},
            "image_vec": vec, "title_vec": vec, "caption_vec": vec, "fused_vec": vec, "channels": 15, "keyword_text": value,
        })
    store.upsert(rows)
    yield store
    store.close()


def test_escaped_values_match_exactly_in_milvus(milvus_store):
    """Each tricky value matches its own row and nothing else: no injection, no mangling."""
    for i, value in enumerate(TRICKY):
        for flt in (ProductFilter(categories=[value]), ProductFilter(tags_any=[value]), ProductFilter(attributes={"size": [value]})):
            rows = milvus_store.client.query("f", filter=flt.expression(), output_fields=["id"], timeout=10)
            assert [r["id"] for r in rows] == [f"r{i}"], (value, flt.expression())
    none = ProductFilter(categories=['nothing" or category != "'])
    assert milvus_store.client.query("f", filter=none.expression(), output_fields=["id"], timeout=10) == []


def test_python_matches_agrees_with_store(milvus_store):
    rows = milvus_store.get([f"r{i}" for i in range(len(TRICKY))])
    for flt in (ProductFilter(min_price=2, max_price=5), ProductFilter(in_stock=False), ProductFilter(ids=["r1", "r3"], in_stock=True)):
        store_ids = {r["id"] for r in milvus_store.client.query("f", filter=flt.expression(), output_fields=["id"], timeout=10)}
        assert store_ids == {r["id"] for r in rows if flt.matches(r)}


# -- settings ----------------------------------------------------------------------------------------
def test_settings_env_then_flags(monkeypatch):
    monkeypatch.setenv("MM_PORT", "6000")
    monkeypatch.setenv("MM_BACKEND", "triton")
    monkeypatch.setenv("MM_WEIGHTS__IMAGE", "0.7")
    monkeypatch.setenv("MM_FILTERABLE_ATTRIBUTES", "size, fit")
    settings = load_settings(["--port", "7000", "--weight-title", "0.1"])
    assert settings.port == 7000 and settings.backend == "triton"
    assert settings.weights.as_dict() == {"image": 0.7, "title": 0.1, "caption": 0.0, "keyword": 0.0}
    assert settings.filterable_attributes == ["size", "fit"]


def test_settings_reject_bad_values(monkeypatch):
    from pydantic import ValidationError

    for argv in (["--backend", "gpu"], ["--top-k-max", "0"], ["--top-k-default", "50", "--top-k-max", "10"],
                 ["--text-query-weights", "image=1,colour=2"], ["--image-query-weights", "image=-1"]):
        with pytest.raises(ValidationError):
            load_settings(argv)
    monkeypatch.setenv("MM_WEIGHTS__IMAGE", "0")
    with pytest.raises(ValidationError):
        load_settings(["--weight-title", "0", "--weight-caption", "0"])


def test_selective_filters_overfetch_and_unselective_do_not(milvus_store):
    milvus_store.config.filtered_limit, milvus_store.config.overfetch_below = 500, 0.2
    selective = milvus_store.plan(ProductFilter(categories=["plain"]), limit=5)  # 1 of 9 rows
    assert selective.limit == 500 and selective.matching_fraction == pytest.approx(1 / len(TRICKY))
    broad = milvus_store.plan(ProductFilter(max_price=100.0), limit=5)  # every row
    assert broad.limit == 5 and broad.matching_fraction == pytest.approx(1.0)
    assert milvus_store.plan(ProductFilter(), limit=5).limit == 5
    hits = milvus_store.ann(np.ones(4, dtype=np.float32) / 2, "fused_vec", 3, ProductFilter(categories=["plain"]), ["id", "fused_vec"])
    assert [h[0] for h in hits] == ["r0"] and "fused_vec" in hits[0][2]


def test_query_type_weights_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("MM_IMAGE_QUERY_WEIGHTS", "image=0.9,title=0.1,caption=0")
    settings = load_settings(["--text-query-weights", "image=0.2,title=0.5,caption=0.1,keyword=0.2"])
    assert settings.query_weights("text") == {"image": 0.2, "title": 0.5, "caption": 0.1, "keyword": 0.2}
    assert settings.query_weights("image") == {"image": 0.9, "title": 0.1, "caption": 0.0, "keyword": 0.0}
    assert settings.query_weights("composed") == {"image": 0.0, "title": 0.3, "caption": 0.7, "keyword": 0.0}  # the shipped default
    assert load_settings(["--composed-query-weights", ""]).query_weights("composed") == settings.weights.as_dict()
