"""Indexing throughput: `mmsearch index` through the gateway against clip-retrieval's `inference`.

    python -m benchmarks.indexing --repository REPO [--n 200]

The same folder of n product photos (640x480 JPEGs made from Fashion-MNIST photos, else
scikit-image photos) with a title each (`<name>.txt` for the peer, catalog.jsonl for us).
Peer: `clip-retrieval inference --input_format files` with image and text embeddings, batch 64,
2 preprocessing workers, its 2.45.0 file re-keying bug fixed in a wrapper as in its PR #353
(benchmarks/peer/peer_side.py); timed for the whole process (model load included), as a user
waits for it. Ours: `mmsearch index catalog.jsonl` against a running gateway (CLIP only: image,
title and caption-text embeddings, then the store upsert), per variant; the gateway is started
before the clock starts, as a service is. Products/s = products / wall seconds. The peer and our
variants alternate per round.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import load_average, progress
from benchmarks.stack import ROOT, Gateway, GatewaySpec, StoreServer, peer_available, peer_run
from benchmarks.search_peer import SYSTEMS


def make_folder(folder: Path, n: int, size=(640, 480)) -> Path:
    """n JPEG product photos with titles; returns catalog.jsonl (the peer reads the .jpg/.txt pairs)."""
    from PIL import Image

    from quality.sample_catalog import BRANDS, CATEGORIES, COLOURS, NOUN, find_fashion_mnist, read_idx

    folder.mkdir(parents=True, exist_ok=True)
    source = find_fashion_mnist()
    if source is not None:
        pixels = read_idx(source / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
        photos = [(Image.fromarray(255 - pixels[i]).convert("RGB"), CATEGORIES[int(labels[i])]) for i in range(n)]
    else:
        from export.calibration import calibration_images

        photos = [(img, CATEGORIES[i % 10]) for i, img in enumerate(calibration_images(n))]
    lines = []
    for i, (photo, category) in enumerate(photos):
        name = f"item{i:05d}"
        photo.resize(size).save(folder / f"{name}.jpg", quality=90)
        title = f"{COLOURS[i % len(COLOURS)]} {NOUN[category]} by {BRANDS[i % len(BRANDS)]}"
        (folder / f"{name}.txt").write_text(title)
        lines.append(json.dumps({"id": name, "image": f"{name}.jpg", "title": title, "category": category}))
    catalog = folder / "catalog.jsonl"
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def index_with_gateway(address: str, catalog: Path, state: Path) -> dict:
    args = [sys.executable, "-m", "client", "index", str(catalog), "--address", address, "--json", "--no-progress",
            "--restart", "--state", str(state), "--batch-size", "32", "--concurrency", "2"]
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"mmsearch index failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    return {"wall_s": round(seconds, 2), "ok": summary["ok"], "failed": summary["failed"]}


def run(repository: Path, n: int = 200, rounds: int = 1, systems: list[GatewaySpec] | None = None, work: Path | None = None,
        with_peer: bool = True) -> dict:
    from runtime.manifest import Manifest

    systems = [s for s in (systems or SYSTEMS) if s.batch_max_size > 1]
    arch = str(Manifest.load(repository).clip.get("arch"))
    work = Path(tempfile.mkdtemp(prefix="bench_index_", dir=work))
    peer_reason = peer_available() if with_peer else "not asked"
    result: dict = {"n": n, "arch": arch, "rounds": rounds, "peer": {"available": peer_reason is None, "reason": peer_reason},
                    "runs": []}
    processes = []
    try:
        progress(f"indexing: writing {n} 640x480 JPEGs with titles")
        catalog = make_folder(work / "photos", n)
        if peer_reason is None:
            progress("indexing: peer checkpoint")
            import numpy as np

            np.save(work / "v.npy", np.eye(64, 512, dtype="float32"))
            peer_run("prepare", "--vectors", str(work / "v.npy"), "--out", str(work / "peer"), "--arch", arch, "--nlist", "1")
        store = StoreServer(work / "store.db", work / "store.log")
        processes.append(store)
        gateways = {}
        for spec in systems:
            gateways[spec.label] = Gateway(spec, repository, store.uri, f"index_{spec.label.replace('-', '_')}", work)
            processes.append(gateways[spec.label])
        for round_ in range(rounds):
            if peer_reason is None:
                out = work / f"peer_out_{round_}"
                started = time.perf_counter()
                inner = peer_run("inference", "--input", str(work / "photos"), "--out", str(out), "--checkpoint",
                                 str(work / "peer" / "checkpoint.pt"), "--arch", arch, "--batch", "64", "--workers", "2")
                wall = time.perf_counter() - started
                result["runs"].append({"system": "peer", "round": round_, "wall_s": round(wall, 2), "inner_s": inner.get("inference_s"),
                                       "products_per_s": round(n / wall, 2), "load_average": round(load_average(), 2)})
                progress(f"indexing: peer inference {n / wall:.1f} products/s ({wall:.1f} s)")
            for label, gateway in gateways.items():
                row = index_with_gateway(gateway.address, catalog, work / f"state-{label}-{round_}.json")
                row.update(system=label, round=round_, products_per_s=round(row["ok"] / row["wall_s"], 2), load_average=round(load_average(), 2))
                result["runs"].append(row)
                progress(f"indexing: {label} {row['products_per_s']:.1f} products/s ({row['wall_s']:.1f} s, {row['ok']} ok)")
        by = {}
        for row in result["runs"]:
            by.setdefault(row["system"], []).append(row["products_per_s"])
        result["products_per_s"] = {k: sorted(v)[len(v) // 2] for k, v in by.items()}
        if "peer" in by:
            result["x_peer"] = {k: round(v / result["products_per_s"]["peer"], 2) for k, v in result["products_per_s"].items()}
    finally:
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.repository, args.n, args.rounds, with_peer=not args.no_peer)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
