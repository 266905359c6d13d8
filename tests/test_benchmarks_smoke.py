"""The benchmark suite keeps working: `python -m benchmarks --smoke` at tiny sizes (not the suite itself).

The clip-retrieval peer runs when its venv exists (benchmarks/peer/setup_venv.sh); without it the
peer rows are skipped and say why in the results.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.stack import peer_available

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["kernels", "search", "indexing", "encoder_runtimes", "triton_batching", "store_search"]

pytest.importorskip("openvino")


@pytest.mark.slow
def test_suite_smoke_runs_every_benchmark_and_writes_the_report(tmp_path):
    out, docs = tmp_path / "results", tmp_path / "docs" / "benchmarks.md"
    command = [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--docs", str(docs), "--work", str(tmp_path / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=str(ROOT),
                          env={**{k: v for k, v in os.environ.items() if k != "MM_ENGINE"}, "PYTHONPATH": str(ROOT)})  # the shipped `auto`
    suite = json.loads((out / "suite.json").read_text())
    failed = {k: json.loads((out / f"{k}.json").read_text()).get("error") for k, v in suite["steps"].items() if v["status"] != "ok"}
    assert done.returncode == 0 and not failed, (failed, done.stderr[-3000:])
    search = json.loads((out / "search.json").read_text())
    reason = peer_available()
    assert search["peer"]["available"] is (reason is None)
    if reason is None:
        assert search["baseline"] == "peer" and search["compare"]["peer"]["text"]["qps"]["median"] > 0
        assert json.loads((out / "indexing.json").read_text())["products_per_s"]["peer"] > 0
    else:
        assert search["peer"]["reason"] == reason  # the skip says why
    for system in ("ours-default", "ours-fp32", "ours-default-nobatch"):
        for kind in ("text", "image"):
            assert search["compare"][system][kind]["qps"]["median"] > 0
    kernels = json.loads((out / "kernels.json").read_text())
    assert kernels["quality"]["ort-fp32"]["recall10_text"] == 1.0
    text = docs.read_text()
    assert "## Targets" in text and "## Search side by side with clip-retrieval" in text
    assert (docs.parent / "benchmark-concurrency.png").stat().st_size > 1000
