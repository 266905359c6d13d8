"""A few seconds of benchmarks/soak.py (the 5-minute soak's figures are in docs/benchmarks.md):
mixed search/upsert/get through the load generator against a real gateway with API keys, no errors,
memory sampled."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.launcher import gateway_env
from tests.gateway_fixtures import gateway_repository  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_soak_smoke(gateway_repository, tmp_path):
    out = tmp_path / "soak.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--model-repository", str(gateway_repository),
               "--duration", "4", "--warmup", "1", "--step", "2", "--concurrency", "4", "--pool", "10", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=gateway_env())
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests"] > 0 and report["ok"] == report["requests"] and report["errors"] == {}
    assert set(report["by_kind"]) == {"text", "image", "composed", "get", "upsert"}
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms"]["p99"] >= report["latency_ms"]["p50"]
    assert report["rss_after_warmup_kib"]["gateway_kib"] > 0 and report["rss_end_kib"]["children"] == 1  # Milvus Lite child
    assert len(report["samples"]) == 3 and report["gateway_log_tracebacks"] == 0
