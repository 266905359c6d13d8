"""What every benchmark shares: round-robin timing, progress lines, the machine's description."""
from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from importlib import metadata
from typing import Callable

import numpy as np

_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the seconds since the suite (or script) started."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def interleaved_ms_per_item(runs: dict[str, Callable[[], object]], batch: int, min_seconds: float, min_repeats: int = 5,
                            max_repeats: int = 100) -> dict[str, float]:
    """Median ms per item of each runner, measured round-robin so that machine noise hits all alike."""
    for run in runs.values():  # warm-up
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    first = next(iter(runs))
    started = time.perf_counter()
    while len(samples[first]) < min_repeats or time.perf_counter() - started < min_seconds:
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - t0) * 1000 / batch)
        if len(samples[first]) >= max_repeats:
            break
    return {name: float(np.median(values)) for name, values in samples.items()}


def load_average() -> float:
    return os.getloadavg()[0]


def machine() -> dict:
    """Host, CPU, versions and load: printed at the top of docs/benchmarks.md."""
    cpu = platform.processor() or ""
    flags = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and not cpu.strip():
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
        if not cpu or cpu == "x86_64":
            with open("/proc/cpuinfo") as handle:
                cpu = next((l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for package in ("onnxruntime", "openvino", "numpy", "pymilvus", "milvus-lite", "grpcio", "torch", "open_clip_torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "python": platform.python_version(),
        "versions": versions,
        "load_average_1m": round(load_average(), 2),
    }
