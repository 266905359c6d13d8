"""Search side by side with clip-retrieval, batching on/off, gateway overhead, start-up, and scaling.

    python -m benchmarks.search_peer --repository REPO [--n 100000] [--blocks 3] [--seconds 6]

One Milvus Lite store server holds n products (benchmarks/stack.py); the peer's clip_back gets a
faiss IVF index over the same n fused vectors and an open_clip checkpoint of the same
architecture (random weights, saved to a file). Our gateways (local backend, one per variant)
and the peer answer the same text (three words) and image (320x240 JPEG) queries at the same
concurrency from the same client process; systems are alternated within each block (rotating the
order), so load on the shared machine hits all alike; ratios to the peer are taken per block.
Then, on the default variant: throughput against concurrency and latency against catalog size.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load_average, progress
from benchmarks.loadgen import TEXT_QUERIES, GatewayClient, PeerClient, closed_loop, query_image
from benchmarks.stack import WEIGHTS_TAG, Gateway, GatewaySpec, Peer, StoreServer, peer_available, peer_run, populate


def load_collection(uri: str, collection: str) -> float:
    """Load an existing collection in the store server (gateway/store.py's own connect); returns its seconds."""
    from gateway.store import MilvusConfig, MilvusStore

    started = time.perf_counter()
    store = MilvusStore(MilvusConfig(uri=uri, collection=collection, dim=0, timeout_s=120))
    store.connect()
    store.close()
    return round(time.perf_counter() - started, 2)


def _default_spec(label: str, **overrides) -> GatewaySpec:
    """The shipped settings (gateway/settings.py): what `python -m gateway` runs without flags."""
    from gateway.settings import Settings
    from runtime.sessions import resolve_engine

    s = Settings()
    values = dict(variant=s.model_variant, engine=resolve_engine(s.engine), batch_max_size=s.batch_max_size,
                  batch_max_delay_ms=s.batch_max_delay_ms, threads=s.inference_threads)
    return GatewaySpec(label, **{**values, **overrides})


# The CPU default is measured against the peer, with ORT fp32 (the graph as exported) beside it and
# the default without cross-request batching (batch_max_size 1: one graph call per request).
SYSTEMS = [
    _default_spec("ours-fp32", variant="fp32", engine="onnxruntime"),
    _default_spec("ours-default"),
    _default_spec("ours-default-nobatch", batch_max_size=1),
]


def _sender(client, kind: str, image: bytes):
    if kind == "text":
        return lambda i: client.search(text=TEXT_QUERIES[i % len(TEXT_QUERIES)])
    return lambda i: client.search(image=image)


def _summary(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    if not a.size:
        return {}
    return {"median": round(float(np.median(a)), 3), "min": round(float(a.min()), 3), "max": round(float(a.max()), 3)}


async def _alternate(clients: dict, kinds: list[str], blocks: int, seconds: float, concurrency: int, image: bytes) -> list[dict]:
    rows = []
    labels = list(clients)
    for block in range(blocks):
        order = labels[block % len(labels):] + labels[: block % len(labels)]
        for label in order:
            for kind in kinds:
                client = clients[label]
                if hasattr(client, "timings"):
                    client.timings.clear()
                step = await closed_loop(_sender(client, kind, image), concurrency, seconds)
                step.update(block=block, system=label, kind=kind, load_average=round(load_average(), 2))
                if getattr(client, "timings", None):
                    t = client.timings
                    step["server_ms_p50"] = {s: round(float(np.median([x.get(s, 0.0) for x in t])), 3) for s in ("total", "inference", "store", "preprocess")}
                    step["overhead_ms_p50"] = round(float(np.median([x["total"] - x.get("inference", 0) - x.get("store", 0) for x in t])), 3)
                rows.append(step)
                progress(f"search: block {block + 1}/{blocks} {label:<22} {kind:<5} {step['qps']:7.1f} q/s  p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms")
    return rows


def _compare(rows: list[dict], baseline: str) -> dict:
    """Per system and kind: QPS/p50/p99 over blocks, and the per-block ratios to `baseline`."""
    out: dict = {}
    for row in rows:
        entry = out.setdefault(row["system"], {}).setdefault(row["kind"], {"qps": [], "p50_ms": [], "p99_ms": [], "overhead_ms_p50": [], "qps_x": [], "p99_x": []})
        entry["qps"].append(row["qps"])
        entry["p50_ms"].append(row["p50_ms"])
        entry["p99_ms"].append(row["p99_ms"])
        if "overhead_ms_p50" in row:
            entry["overhead_ms_p50"].append(row["overhead_ms_p50"])
        base = next((r for r in rows if r["system"] == baseline and r["kind"] == row["kind"] and r["block"] == row["block"]), None)
        if base and base["qps"] and row["p99_ms"]:
            entry["qps_x"].append(row["qps"] / base["qps"])
            entry["p99_x"].append(base["p99_ms"] / row["p99_ms"])  # > 1: our p99 is that many times lower
    return {s: {k: {m: _summary(v) for m, v in e.items() if v} for k, e in kinds.items()} for s, kinds in out.items()}


async def _scaling(address: str, image: bytes, levels: list[int], seconds: float) -> list[dict]:
    client = GatewayClient(address)
    try:
        rows = []
        for level in levels:
            for kind in ("text", "image"):
                step = await closed_loop(_sender(client, kind, image), level, seconds)
                step["kind"] = kind
                rows.append(step)
                progress(f"scaling: concurrency {level:>3} {kind:<5} {step['qps']:7.1f} q/s  p50 {step['p50_ms']} ms  p99 {step['p99_ms']} ms")
        return rows
    finally:
        await client.close()


async def _latency_at(address: str, queries: int) -> dict:
    client = GatewayClient(address)
    try:
        step = await closed_loop(lambda i: client.search(text=TEXT_QUERIES[i % len(TEXT_QUERIES)]), 1, 0, warmup=1.0)
        lat, store = [], []
        for i in range(queries):
            t0 = time.perf_counter()
            await client.search(text=TEXT_QUERIES[i % len(TEXT_QUERIES)])
            lat.append((time.perf_counter() - t0) * 1000)
            store.append(client.timings[-1].get("store", 0.0))
        del step
        return {"p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "store_p50_ms": round(float(np.percentile(store, 50)), 2), "queries": queries}
    finally:
        await client.close()


def run(repository: Path, n: int = 100_000, blocks: int = 3, seconds: float = 6.0, concurrency: int = 16,
        scaling_sizes: tuple[int, ...] = (10_000,), scaling_levels: tuple[int, ...] = (1, 4, 16, 64), scaling_seconds: float = 4.0,
        systems: list[GatewaySpec] | None = None, work: Path | None = None, with_peer: bool = True) -> dict:
    from runtime.manifest import Manifest

    systems = systems or SYSTEMS
    dim = Manifest.load(repository).embed_dim
    arch = str(Manifest.load(repository).clip.get("arch"))
    cache = Path(work or tempfile.gettempdir()) / "stores"  # the written catalog and the peer's index, reused by later runs
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_search_", dir=work))
    image = query_image()
    result: dict = {"n": n, "dim": dim, "arch": arch, "concurrency": concurrency, "blocks": blocks, "seconds_per_step": seconds,
                    "systems": [s.__dict__ for s in systems]}
    peer_reason = peer_available() if with_peer else "not asked (--no-peer)"
    result["peer"] = {"available": peer_reason is None, "reason": peer_reason}
    processes = []
    try:
        key = f"{n}-{dim}-{WEIGHTS_TAG}"  # a store is reused only when its fused vectors have the shipped weights
        store = StoreServer(cache / f"store-{key}.db", work / "store.log")
        processes.append(store)
        fused_path = cache / f"fused-{key}.npy"
        if fused_path.is_file():
            progress(f"search: reusing the {n}-product store written by an earlier run ({cache})")
            result["store_reused"] = True
            # a reused file starts unloaded: load it before the gateways start, so that their time to SERVING is
            # measured with the store up and its collection loaded (the target's case), not the first one's load
            result["store_load_s"] = load_collection(store.uri, "products")
            progress(f"search: store collection loaded in {result['store_load_s']} s")
        else:
            started = time.perf_counter()
            progress(f"search: writing {n} products into the store (once; later runs reuse it)")
            fused = populate(store.uri, "products", n, dim)
            result["store_insert_rows_per_s"] = round(n / (time.perf_counter() - started), 1)
            np.save(fused_path, fused)
        clients: dict = {}
        if peer_reason is None:
            nlist = 1024 if n >= 100_000 else max(16, n // 100)
            peer_dir = cache / f"peer-{key}-{arch}"
            if not (peer_dir / "indices_paths.json").is_file():
                progress(f"search: peer index (faiss IVF{nlist},Flat) and checkpoint")
                result["peer"]["prepare"] = peer_run("prepare", "--vectors", str(fused_path), "--out", str(peer_dir),
                                                     "--arch", arch, "--nlist", str(nlist), "--nprobe", "32")
            result["peer"]["index"] = f"IVF{nlist},Flat nprobe 32 (inner product)"
            peer = Peer(peer_dir, work, arch)
            processes.append(peer)
            result["peer"]["start_s"] = round(peer.start_s, 2)
            clients["peer"] = peer.url  # the aiohttp session is made inside the event loop
        gateways = {}
        for spec in systems:
            progress(f"search: starting gateway {spec.label} on the {n}-product store")
            gateway = Gateway(spec, repository, store.uri, "products", work)
            processes.append(gateway)
            gateways[spec.label] = gateway
            result.setdefault("time_to_serving_s", {})[spec.label] = round(gateway.start_s, 2)

        async def measure():
            if "peer" in clients:
                clients["peer"] = PeerClient(clients["peer"])
            clients.update({label: GatewayClient(g.address) for label, g in gateways.items()})
            try:
                return await _alternate(clients, ["text", "image"], blocks, seconds, concurrency, image)
            finally:
                for client in clients.values():
                    await client.close()

        rows = asyncio.run(measure())
        result["steps"] = rows
        baseline = "peer" if "peer" in clients else systems[0].label
        result["baseline"] = baseline
        result["compare"] = _compare(rows, baseline)

        default = gateways.get("ours-default") or next(iter(gateways.values()))
        for label, gateway in gateways.items():
            if gateway is not default:
                gateway.stop()
                processes.remove(gateway)
        if "peer" in clients:
            peer.stop()
            processes.remove(peer)
        progress("scaling: throughput against concurrency (default variant)")
        result["scaling_concurrency"] = asyncio.run(_scaling(default.address, image, list(scaling_levels), scaling_seconds))
        sizes = {n: asyncio.run(_latency_at(default.address, 60))}
        for size in scaling_sizes:
            if size == n:
                continue
            progress(f"scaling: {size}-product collection")
            marker = cache / f"collection-{key}-{size}.done"
            if not marker.is_file():
                populate(store.uri, f"products_{size}", size, dim)
                marker.touch()
            gateway = Gateway(default.spec, repository, store.uri, f"products_{size}", work)
            processes.append(gateway)
            sizes[size] = asyncio.run(_latency_at(gateway.address, 60))
            gateway.stop()
            processes.remove(gateway)
        result["scaling_catalog"] = {str(k): v for k, v in sorted(sizes.items())}
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True, help="an export with the variants the systems use")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.repository, args.n, args.blocks, args.seconds, args.concurrency, with_peer=not args.no_peer)
    print(json.dumps(result["compare"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
