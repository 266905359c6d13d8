"""benchmarks/gpu_check.py: its short CPU version runs in seconds and prints one JSON that says it is the CPU one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_version_prints_one_json(tiny_repository):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "MM_ORT_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--repository", str(tiny_repository),
               "--budget-s", "60", "--batches", "1", "4", "--min-seconds", "0.05"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "cpu" and "no GPU" in report["note"] and report["within_budget"]
    engines = report["encoders_items_per_s"]
    for engine in ("torch_eager_fp32", "ort_cpu_fp32"):
        for model in ("clip_image", "clip_text"):
            assert set(engines[engine][model]) == {"1", "4"} and all(v > 0 for v in engines[engine][model].values())
    assert engines["ort_tensorrt_fp16"].startswith("skipped")
    assert report["preprocessing"]["pillow_cpu_images_per_s"] > 0
    assert report["blip_caption"]["b1_ms"] > 0 and report["blip_caption"]["b16_ms"] > 0
