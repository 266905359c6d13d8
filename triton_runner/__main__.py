"""`python -m triton_runner render|serve`: the CPU rendering of model_repository and a local Triton."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from triton_runner.render import COMMITTED_REPOSITORY, RenderError, not_rendered, render_cpu
from triton_runner.server import DEFAULT_WORKDIR, TritonServer, TritonStartError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m triton_runner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="render the committed GPU repository for a CPU-only Triton")
    render.add_argument("--source", type=Path, default=COMMITTED_REPOSITORY,
                        help="exported repository (manifest.json + ONNX graphs) (default: model_repository)")
    render.add_argument("--configs", type=Path, default=COMMITTED_REPOSITORY,
                        help="committed configs and python models (default: model_repository)")
    render.add_argument("--out", type=Path, default=Path("build/triton_cpu"), help="output (default: build/triton_cpu)")
    render.add_argument("--variant", choices=["fp32", "int8"], default="fp32", help="ONNX files to link (default: fp32)")
    render.add_argument("--no-dynamic-batching", action="store_true",
                        help="max_batch_size 1 and no dynamic_batching (the benchmark's baseline)")
    render.add_argument("--intra-op-threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads per graph instance; 0: ONNX Runtime's choice (default 1: "
                             "several stubs share few cores, and idle ORT worker threads spin)")
    render.add_argument("--queue-delay-us", type=int,
                        help="override max_queue_delay_microseconds everywhere (0: no wait, no preferred sizes)")
    render.add_argument("--decode-threads", type=int,
                        help="preprocess_image's decoding threads per instance (default: the config's, 0 = one per core)")
    serve = sub.add_parser("serve", help="run tritonserver on 127.0.0.1 until Ctrl-C / SIGTERM")
    serve.add_argument("--repository", type=Path, default=Path("build/triton_cpu"))
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="backend dir and log live here")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        try:
            names = render_cpu(args.source, args.out, args.configs, args.variant,
                               not args.no_dynamic_batching, args.intra_op_threads, args.queue_delay_us, args.decode_threads)
        except RenderError as exc:
            print(f"render failed: {exc}", file=sys.stderr)
            return 2
        print(f"rendered {len(names)} models ({', '.join(names)}) into {args.out}")
        return 0
    problem = not_rendered(args.repository)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    server = TritonServer(args.repository, args.grpc_port, args.http_port, args.metrics_port, args.workdir,
                          startup_timeout=args.timeout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
    except TritonStartError as exc:
        print(f"tritonserver failed to start: {exc}", file=sys.stderr)
        return 1
    print(f"tritonserver ready: grpc {server.grpc_url}, http {server.http_url}, metrics 127.0.0.1:{server.metrics_port}; "
          f"log {server.log_file}; Ctrl-C stops it", flush=True)
    try:
        while not stop.is_set() and server.process is not None and server.process.poll() is None:
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    code = server.stop()
    print(f"tritonserver stopped (exit code {code})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
