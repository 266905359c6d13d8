"""The evaluation harness end to end through a real gateway subprocess (local backend on the tiny export,
Milvus Lite in tmp) on a small Fashion-MNIST catalog: every ablation is measured through the system and
exactly, and on a catalog this small the two agree."""
from __future__ import annotations

import json

import pytest

from quality.sample_catalog import find_fashion_mnist
from quality.eval import ABLATIONS, EvalConfig, run_eval


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_harness_through_the_gateway(tiny_repository, tmp_path):
    cfg = EvalConfig(repository=tiny_repository, out=tmp_path / "out", workdir=tmp_path / "work", limit=40,
                     image_queries=5, gateway_args=["--index-type", "FLAT"])
    report = run_eval(cfg, log=lambda _m: None)
    assert report["products"] == 40
    assert report["queries"] == {"text->image": 20, "image->image": 5, "composed": 5}
    results = report["results"]
    assert len(results) == 3 * len(ABLATIONS)
    assert {r["ablation"] for r in results} == {a.name for a in ABLATIONS}
    for r in results:
        assert 0.0 <= r["gateway"]["precision@10"] <= 1.0
        # a FLAT index over 40 products is exact: the system and brute force rank alike (ties aside)
        assert abs(r["gateway"]["precision@10"] - r["exact"]["precision@10"]) <= 0.02, r
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["table"] == report["table"]
    assert (tmp_path / "out" / "eval.png").stat().st_size > 10_000
    assert "| text->image | image only |" in (tmp_path / "out" / "eval.md").read_text()
