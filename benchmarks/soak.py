"""Soak: mixed search/upsert/get load at a fixed concurrency for a long time; errors, latency and memory.

Starts a gateway (gateway/launcher.py: local backend on a model repository, Milvus Lite file in a
temp directory, 127.0.0.1, API keys on so the auth path is in the loop), seeds a catalog, warms up,
then drives it through the project's load generator (client/load.py) in steps of `--step` seconds
at `--concurrency` workers for `--duration` seconds. Upserts cycle through a fixed pool of ids, so
the catalog (and the memory it needs) stays the same size: memory that grows is a leak. After each
step it samples the resident memory (VmRSS) of the gateway process and of its Milvus Lite child.

    python benchmarks/soak.py --model-repository model_repository --duration 300 --out docs/soak.json

Reports (JSON on stdout and in --out): requests, errors by code, p50/p99 over all steps, QPS, RSS
after the warm-up and at the end, and the growth in percent (target < 10 %, errors 0).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.connection import ConnectionConfig  # noqa: E402
from client.load import LoadPlan, run_load  # noqa: E402
from client.workload import Workload, parse_mix  # noqa: E402
from gateway import launcher  # noqa: E402

SOAK_KEY = "soak-writer-key-0123456789"


def rss_kib(pid: int) -> int:
    """Resident memory of one process (KiB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def memory(pid: int) -> dict[str, int]:
    kids = children(pid)
    return {"gateway_kib": rss_kib(pid), "children_kib": sum(rss_kib(c) for c in kids), "children": len(kids)}


async def soak(args: argparse.Namespace, address: str, pid: int) -> dict:
    config = ConnectionConfig(address=address, api_key=SOAK_KEY)
    workload = Workload.build(parse_mix(args.mix), seed=args.seed, upsert_pool=args.pool)
    # Seed: every pooled id once, so gets find products and upserts replace them from the start.
    seed_plan = LoadPlan(concurrency=[4], duration=3600, requests=args.pool, warmup=0, cleanup=False, timeout=60)
    seeding = Workload(mix={"upsert": 1.0}, images=workload.images, texts=workload.texts, seed=args.seed,
                       upsert_prefix=workload.upsert_prefix, upsert_pool=args.pool)
    await run_load(config, seeding, seed_plan)
    workload.upserted = list(seeding.upserted)

    warm = LoadPlan(concurrency=[args.concurrency], duration=args.warmup, warmup=0, cleanup=False, timeout=args.timeout)
    await run_load(config, workload, warm)
    after_warmup = memory(pid)
    samples = [{"t": 0.0, **after_warmup}]
    started = time.monotonic()
    steps = max(1, round(args.duration / args.step))
    plan = LoadPlan(concurrency=[args.concurrency] * steps, duration=args.step, warmup=0, cleanup=False, timeout=args.timeout)

    def on_step(result) -> None:
        sample = {"t": round(time.monotonic() - started, 1), **memory(pid), "qps": round(result.qps, 1),
                  "p99_ms": round(result.percentile(99) or 0, 1), "errors": result.error_count}
        samples.append(sample)
        print(f"[soak] {sample}", file=sys.stderr, flush=True)

    results = await run_load(config, workload, plan, on_step=on_step)
    seconds = sum(r.seconds for r in results)
    latencies = np.concatenate([r.latencies_ms for r in results]) if results else np.zeros(0)
    errors: dict[str, int] = {}
    kinds: dict[str, dict[str, int]] = {}
    for r in results:
        for code, n in r.errors.items():
            errors[code] = errors.get(code, 0) + n
        for kind, counts in r.kinds.items():
            into = kinds.setdefault(kind, {})
            for name, n in counts.items():
                into[name] = into.get(name, 0) + n
    end = samples[-1]
    growth = lambda key: round(100.0 * (end[key] - after_warmup[key]) / after_warmup[key], 2) if after_warmup[key] else None  # noqa: E731
    return {
        "concurrency": args.concurrency, "mix": workload.mix, "seconds": round(seconds, 1), "warmup_s": args.warmup,
        "requests": int(sum(r.sent for r in results)), "ok": int(sum(r.ok for r in results)), "errors": errors, "by_kind": kinds,
        "qps": round(sum(r.ok for r in results) / seconds, 1) if seconds else 0.0,
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 2) if latencies.size else None,
                       "p99": round(float(np.percentile(latencies, 99)), 2) if latencies.size else None},
        "rss_after_warmup_kib": after_warmup, "rss_end_kib": {k: end[k] for k in after_warmup},
        "rss_growth_percent": {"gateway": growth("gateway_kib"), "children": growth("children_kib")},
        "catalog_pool": args.pool, "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--step", type=float, default=30.0, help="seconds between memory samples")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--mix", default="text=0.35,image=0.2,composed=0.1,get=0.25,upsert=0.1")
    parser.add_argument("--pool", type=int, default=200, help="product ids the upserts cycle through")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="soak_"))
    keys = work / "api-keys"
    keys.write_text(f"soak write {SOAK_KEY}\n")
    gateway = launcher.start(args.model_repository, str(work / "soak.db"), work, ["--index-type", "FLAT"], api_keys_file=keys,
                             log_path=work / "gateway.log", timeout=180)
    try:
        report = asyncio.run(soak(args, gateway.address, gateway.proc.pid))
        report["machine"] = {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
        report["gateway_log_tracebacks"] = gateway.log(10_000_000).count("Traceback")
    finally:
        gateway.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    bad = sum(report["errors"].values()) or report["gateway_log_tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
