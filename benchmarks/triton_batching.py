"""Dynamic batching on vs off on a local Triton: throughput and p50/p95/p99 of embed_text / embed_image.

Usage: python benchmarks/triton_batching.py [--source EXPORTED_REPO | --clip-arch ViT-B-32]
           [--concurrency 1 4 16 64] [--seconds 5] [--variant fp32|int8] [--json out.json]
           [--perf-analyzer PATH]

One run renders the repository twice from the same exported graphs - as committed (dynamic batching)
and with max_batch_size 1 / no dynamic_batching - and serves both at once with the real tritonserver
(python backend, CPU, 127.0.0.1); every cell is measured on/off/off/on (half the time each), so a
shared machine's changing load hits both alike. Each concurrency level runs that many independent gRPC clients
(tritonclient.grpc.aio), each sending one request at a time, for a fixed time - or, with
--perf-analyzer, Triton's C++ perf_analyzer at that concurrency (a lighter client). The server's own
statistics give the mean executed batch size. Client and server share the machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.grpc.aio as aioclient  # noqa: E402

from runtime.triton_contract import CLIP_IMAGE, CLIP_TEXT, EMBED_IMAGE, EMBED_TEXT  # noqa: E402
from triton_runner import TritonServer  # noqa: E402
from triton_runner.client import counts, delta, image_input, text_input  # noqa: E402
from triton_runner.render import render_cpu  # noqa: E402

QUERIES = [f"{c} {m} {i}" for c in ("red", "navy", "black", "beige") for m in ("leather", "cotton", "wool", "linen")
           for i in ("ankle boots", "summer dress", "tote bag", "scarf")]
GRAPH_OF = {EMBED_TEXT: CLIP_TEXT, EMBED_IMAGE: CLIP_IMAGE}


def product_photo() -> bytes:
    """A real photograph (scikit-image's 'coffee', 400x600) as a JPEG upload."""
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def load(url: str, model: str, concurrency: int, seconds: float, photo: bytes) -> dict:
    """`concurrency` closed-loop clients for `seconds`; latency percentiles in ms, throughput in req/s."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        nonlocal errors
        async with aioclient.InferenceServerClient(url) as client:
            item = index
            while time.perf_counter() < stop_at:
                tensor = text_input([QUERIES[item % len(QUERIES)]]) if model == EMBED_TEXT else image_input([photo])
                started = time.perf_counter()
                try:
                    await client.infer(model, [tensor])
                    latencies.append((time.perf_counter() - started) * 1000)
                except Exception:  # counted, not fatal: the figure says how many
                    errors += 1
                item += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "elapsed": time.perf_counter() - began}


def summarize(parts: list[dict]) -> dict:
    """Pooled figures of several measurement windows of one cell: requests over time, latency percentiles."""
    if "latencies" not in parts[0]:  # perf_analyzer rows: mean of the windows
        row = {key: float(np.mean([p[key] for p in parts])) for key in ("throughput", "p50", "p95", "p99")}
        return {**row, "errors": 0, "stable": all(p["stable"] for p in parts)}
    done = [x for p in parts for x in p["latencies"]]
    latencies = np.asarray(done or [float("nan")])
    return {"throughput": len(done) / sum(p["elapsed"] for p in parts),
            "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "p99": float(np.percentile(latencies, 99)), "errors": sum(p["errors"] for p in parts)}


def perf_analyzer_inputs(workdir: Path, photo: bytes) -> dict[str, Path]:
    """--input-data files: texts as strings; the photo as a serialized BYTES element (length-prefixed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    text = {"data": [{"TEXT": {"content": [q], "shape": [1]}} for q in QUERIES]}
    image = {"data": [{"IMAGE_BYTES": {"b64": base64.b64encode(struct.pack("<I", len(photo)) + photo).decode(), "shape": [1]}}]}
    paths = {EMBED_TEXT: workdir / "text.json", EMBED_IMAGE: workdir / "image.json"}
    paths[EMBED_TEXT].write_text(json.dumps(text))
    paths[EMBED_IMAGE].write_text(json.dumps(image))
    return paths


def perf_analyzer(binary: Path, url: str, model: str, level: int, seconds: float, data: Path) -> dict:
    """One concurrency level with perf_analyzer; its CSV gives throughput and latency percentiles (us)."""
    report = data.parent / f"{model}-{level}.csv"
    env = dict(os.environ)
    if os.environ.get("PERF_ANALYZER_LIBS"):
        env["LD_LIBRARY_PATH"] = os.pathsep.join([os.environ["PERF_ANALYZER_LIBS"], env.get("LD_LIBRARY_PATH", "")])
    output = ""
    # A noisy 2-core machine may never meet a 50% stability bound; then keep the last windows, marked.
    for stability in (50, 1000):
        command = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data),
                   "--concurrency-range", str(level), "--measurement-interval", str(int(seconds * 1000)),
                   "--stability-percentage", str(stability), "--max-trials", "6", "-f", str(report)]
        report.unlink(missing_ok=True)
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        output = done.stdout + done.stderr
        if done.returncode == 0 and report.is_file():
            row = next(csv.DictReader(report.open()))
            return {"errors": 0, "stable": stability <= 100, "throughput": float(row["Inferences/Second"]),
                    **{p: float(row[f"{p} latency"]) / 1000 for p in ("p50", "p95", "p99")}}
    raise RuntimeError(f"perf_analyzer failed: {output[-1500:]}")


ORDER = ("on", "off", "off", "on")  # ABBA: drift in the machine's load hits both configurations alike


def measure(repositories: dict[str, Path], workdir: Path, models: list[str], levels: list[int], seconds: float,
            photo: bytes, analyzer: Path | None = None) -> dict[str, dict]:
    """Both servers up at once (an idle one costs next to nothing); each cell runs on/off/off/on."""
    results: dict[str, dict] = {label: {} for label in repositories}
    data = perf_analyzer_inputs(workdir / "perf_analyzer", photo) if analyzer else {}
    with contextlib.ExitStack() as stack:
        servers = {label: stack.enter_context(TritonServer(repo, workdir=workdir / label)) for label, repo in repositories.items()}
        clients = {label: stack.enter_context(grpcclient.InferenceServerClient(s.grpc_url)) for label, s in servers.items()}
        for model in models:
            for server in servers.values():
                asyncio.run(load(server.grpc_url, model, 4, min(1.0, seconds), photo))  # warm-up
            for level in levels:
                parts: dict[str, list] = {label: [] for label in servers}
                used = {label: {"inferences": 0, "executions": 0} for label in servers}
                for label in ORDER:
                    url, before = servers[label].grpc_url, counts(clients[label], GRAPH_OF[model])
                    if analyzer:
                        parts[label].append(perf_analyzer(analyzer, url, model, level, seconds / 2, data[model]))
                    else:
                        parts[label].append(asyncio.run(load(url, model, level, seconds / 2, photo)))
                    window = delta(counts(clients[label], GRAPH_OF[model]), before)
                    used[label] = {k: used[label][k] + window[k] for k in ("inferences", "executions")}
                for label in servers:
                    row = summarize(parts[label])
                    row["mean_batch"] = used[label]["inferences"] / max(1, used[label]["executions"])
                    results[label][(model, level)] = row
                    print(f"  {model:11s} c={level:<3d} batching {label:3s} {row['throughput']:8.1f} req/s  p50 {row['p50']:7.2f} ms  "
                          f"p95 {row['p95']:7.2f}  p99 {row['p99']:7.2f}  batch {row['mean_batch']:5.2f}  errors {row['errors']}",
                          flush=True)
    return results


def table(on: dict, off: dict, models: list[str], levels: list[int]) -> str:
    lines = ["| model | clients | batching | req/s | p50 ms | p95 ms | p99 ms | mean batch | speed-up |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for model in models:
        for level in levels:
            a, b = on[(model, level)], off[(model, level)]
            for label, row in (("on", a), ("off", b)):
                ratio = f"{a['throughput'] / b['throughput']:.2f}x" if label == "on" else ""
                star = "" if row.get("stable", True) else "*"
                lines.append(f"| {model} | {level} | {label} | {row['throughput']:.1f}{star} | {row['p50']:.2f} | {row['p95']:.2f} | "
                             f"{row['p99']:.2f} | {row['mean_batch']:.2f} | {ratio} |")
    if any(not row.get("stable", True) for rows in (on, off) for row in rows.values()):
        lines.append("\n\\* perf_analyzer did not reach its 50% stability bound; the last measurement windows are shown.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="an exported repository (default: export the tiny preset)")
    parser.add_argument("--clip-arch", help="export this open_clip architecture with random weights instead (e.g. ViT-B-32)")
    parser.add_argument("--variant", choices=["fp32", "int8"], default="fp32")
    parser.add_argument("--models", nargs="+", default=[EMBED_TEXT, EMBED_IMAGE])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring time per cell")
    parser.add_argument("--intra-op-threads", type=int, default=1, help="ONNX Runtime threads per graph (0: its default)")
    parser.add_argument("--queue-delay-us", type=int, help="override the configs' max_queue_delay_microseconds (batching on)")
    parser.add_argument("--decode-threads", type=int, help="preprocess_image's decoding threads per instance, both renderings (0: one per core)")
    parser.add_argument("--perf-analyzer", type=Path,
                        help="perf_analyzer binary to drive the load (else the built-in asyncio clients); "
                             "PERF_ANALYZER_LIBS adds a directory to its LD_LIBRARY_PATH")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    print(f"command: python {' '.join(sys.argv)}  ({os.cpu_count()} CPUs, client: "
          f"{'perf_analyzer' if args.perf_analyzer else 'tritonclient.grpc.aio'})", flush=True)
    with tempfile.TemporaryDirectory(prefix="triton-bench-") as tmp:
        tmp = Path(tmp)
        source = args.source
        if source is None:
            from export.cli import run_export
            from export.presets import load_preset

            clip = {"arch": args.clip_arch, "pretrained": None} if args.clip_arch else load_preset("tiny")["clip"]
            source = tmp / "exported"
            print(f"exporting {clip['arch']} (random weights, CLIP only) ...", flush=True)
            run_export({"preset": "bench", "clip": clip, "blip": None}, source, 17, ["int8"] if args.variant == "int8" else [],
                       log=lambda _m: None)
        photo = product_photo()
        repositories = {"on": tmp / "batching-on", "off": tmp / "batching-off"}
        for label, repository in repositories.items():
            render_cpu(source, repository, variant=args.variant, dynamic_batching=label == "on",
                       intra_op_threads=args.intra_op_threads, queue_delay_us=args.queue_delay_us, decode_threads=args.decode_threads)
        results = measure(repositories, tmp / "work", args.models, args.concurrency, args.seconds, photo, args.perf_analyzer)
    print()
    print(table(results["on"], results["off"], args.models, args.concurrency))
    if args.json:
        rows = [{"model": m, "clients": c, "batching": label, **results[label][(m, c)]}
                for label in results for (m, c) in results[label]]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
