"""The main job's second half: a gateway on Milvus Lite, driven by the client CLI as a user would.

Starts `python -m gateway` (Milvus Lite file under data/main_job) on a free 127.0.0.1 port, waits for
health SERVING, then runs `python -m client` to index a sample catalog of real product photos
(Fashion-MNIST), search it a few ways, describe a photo, and run a short load test; finally stops the
gateway (also on Ctrl-C or an error). The gateway's backend is `local` (ONNX Runtime in-process) or,
with `--backend triton` (MM_BACKEND=triton), a local tritonserver serving the CPU rendering of the
same export (`python -m triton_runner render`), the design's serving path end to end.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client.sync import SearchClient  # noqa: E402
from gateway import launcher  # noqa: E402


def cli(*args: str, address: str) -> None:
    command = [sys.executable, "-m", "client", *args, "--address", address]
    print(f"\n$ mmsearch {' '.join(shlex.quote(a) for a in args)}", flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def start_gateway(repository: Path, data: Path, triton_url: str | None = None) -> launcher.GatewayProcess:
    log = data / "gateway.log"
    backend = {"backend": "triton", "args": ["--triton-url", triton_url, "--inference-timeout-s", "60"]} if triton_url else {}
    gateway = launcher.start(repository, str(data / "products.db"), data, log_path=log, new_session=True, wait=False, **backend)
    print(f"[demo] starting the gateway on {gateway.address} (log: {log})", flush=True)
    (data / "gateway.pid").write_text(str(gateway.proc.pid))  # run.sh's EXIT trap stops it if this script is killed
    return gateway


def start_triton(repository: Path, data: Path):
    """The CPU rendering of the export (int8 graphs where exported) on a local tritonserver."""
    from triton_runner import TritonServer
    from triton_runner.render import render_cpu

    rendered = data / "triton_cpu"
    names = render_cpu(repository, rendered, variant="int8")
    server = TritonServer(rendered, workdir=data / "triton", startup_timeout=300)
    print(f"[demo] starting tritonserver on the CPU rendering of {repository} ({len(names)} models; log: {server.log_file})", flush=True)
    server.start()
    (data / "triton.pid").write_text(str(server.process.pid))  # run.sh's EXIT trap stops its process group if need be
    return server


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (from run.sh) and SIGINT end the demo like Ctrl-C: the gateway is stopped in `finally`."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _random_clip(repository: Path) -> bool:
    """True when the exported CLIP has no trained weights (tiny preset without fine-tuning)."""
    try:
        return json.loads((repository / "manifest.json").read_text())["clip"].get("pretrained") is None
    except (OSError, ValueError, KeyError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "main_job", help="catalog, Milvus Lite file, reports (recreated)")
    parser.add_argument("--products", type=int, default=int(os.environ.get("MM_SAMPLE_SIZE", "200")))
    parser.add_argument("--load-seconds", type=float, default=5.0)
    parser.add_argument("--backend", choices=["local", "triton"], default=os.environ.get("MM_BACKEND", "local"),
                        help="gateway backend (default: MM_BACKEND, else local); triton starts a local tritonserver")
    args = parser.parse_args(argv)

    shutil.rmtree(args.data, ignore_errors=True)
    args.data.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "quality.sample_catalog", "--out", str(args.data / "catalog"), "-n", str(args.products)],
                   cwd=ROOT, check=True)
    catalog = args.data / "catalog" / "catalog.jsonl"
    rows = [json.loads(line) for line in catalog.read_text().splitlines()]
    by_category = {row["category"]: row for row in rows}

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    triton, gateway = None, None
    try:
        if args.backend == "triton":
            triton = start_triton(args.model_repository, args.data)
            print(f"[demo] tritonserver ready on {triton.grpc_url}", flush=True)
        gateway = start_gateway(args.model_repository, args.data, triton.grpc_url if triton else None)
        address = gateway.address
        started = time.monotonic()
        with SearchClient(address) as client:
            client.wait_until_serving(timeout=600)
        print(f"[demo] gateway SERVING after {time.monotonic() - started:.1f}s", flush=True)
        cli("index", str(catalog), "--no-progress", address=address)
        cli("search", "black leather ankle boots", "--top-k", "5", address=address)
        cli("search", "summer dress", "--category", "Dress", "--price-max", "80", "--top-k", "5", address=address)
        some = by_category.get("Sneaker") or rows[0]
        cli("search", "--image", str(catalog.parent / some["image"]), "--top-k", "5", address=address)
        cli("search", "in red", "--image", str(catalog.parent / some["image"]), "--top-k", "5", "--weights", "image=0.6,title=0.3,caption=0.1", address=address)
        cli("describe", str(catalog.parent / (by_category.get("Bag") or rows[0])["image"]), address=address)
        cli("load", "--concurrency", "1", "4", "16", "--duration", str(args.load_seconds), "--catalog", str(catalog),
            "--json", str(args.data / "load.json"), "--csv", str(args.data / "load.csv"), "--plot", str(args.data / "load.png"),
            address=address)
        if _random_clip(args.model_repository):
            print("\n[demo] note: the offline tiny preset has random weights, so these rankings, captions and tags are "
                  "arbitrary; the real preset (where the model hub is reachable) gives meaningful ones", flush=True)
    except subprocess.CalledProcessError as error:
        print(f"[demo] step failed (exit {error.returncode}); gateway log: {args.data / 'gateway.log'}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, TimeoutError) as error:
        print(f"[demo] stopped: {error or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:  # e.g. tritonserver failed to start: its log tail says why
        print(f"[demo] failed: {error}", file=sys.stderr)
        return 1
    finally:
        if gateway is not None:
            gateway.stop()
            (args.data / "gateway.pid").unlink(missing_ok=True)
            print("[demo] gateway stopped", flush=True)
        if triton is not None:
            triton.stop()
            (args.data / "triton.pid").unlink(missing_ok=True)
            print("[demo] tritonserver stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
