#!/usr/bin/env python3
"""CPU Triton in a container: render the exported repository for CPU, then exec tritonserver.

Used by the compose `cpu` profile and the Kubernetes `cpu` overlay (image deploy/docker/triton-cpu.Dockerfile).
The same two steps as `python -m triton_runner render` + `serve`, with one difference that a container
needs: the server listens on all interfaces (`triton_runner serve` binds 127.0.0.1 on purpose, for
tests and laptops). The tritonserver binary, the python backend and its Python 3.11 stub come from the
nvidia-pytriton wheel, assembled by triton_runner.server exactly as the test suite does.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence


def build_command(repository: Path, workdir: Path, address: str, http_port: int, grpc_port: int,
                  metrics_port: int) -> list[str]:
    """The tritonserver command line (the binary and backend dir from the installed nvidia-pytriton)."""
    from triton_runner.server import build_backend_dir, pytriton_server_dir

    return [
        str(pytriton_server_dir() / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={build_backend_dir(workdir)}",
        f"--http-address={address}", f"--http-port={http_port}",
        f"--grpc-address={address}", f"--grpc-port={grpc_port}",
        f"--metrics-address={address}", f"--metrics-port={metrics_port}",
        # no GPU: CPU/GPU utilisation metrics off; the inference metrics (queue and compute time,
        # counts) stay on port 8002, as on the GPU server
        "--allow-cpu-metrics=false", "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=30",
    ]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="mm-triton-cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path(env("MODEL_REPOSITORY", "/models")),
                        help="exported repository: configs, python models, ONNX graphs, manifest.json (default: $MODEL_REPOSITORY or /models)")
    parser.add_argument("--out", type=Path, default=Path(env("TRITON_CPU_REPOSITORY", "/tmp/triton_cpu")),
                        help="where the CPU rendering is written (default: /tmp/triton_cpu)")
    parser.add_argument("--workdir", type=Path, default=Path(env("TRITON_WORKDIR", "/tmp/triton")),
                        help="backend directory lives here (default: /tmp/triton)")
    parser.add_argument("--variant", choices=["fp32", "int8"], default=env("TRITON_CPU_VARIANT", "fp32"),
                        help="ONNX files to serve (int8: about 2x faster on CPU; needs `export --int8`)")
    parser.add_argument("--intra-op-threads", type=int, default=int(env("TRITON_CPU_THREADS", "0")),
                        help="ONNX Runtime threads per graph instance (default 0: ONNX Runtime's choice, all "
                             "the host's cores -- set it under a CPU limit, which ONNX Runtime does not see)")
    parser.add_argument("--address", default="0.0.0.0", help="listen address (default: all interfaces)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--dry-run", action="store_true", help="render, print the command, do not start")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from triton_runner.render import RenderError, render_cpu
    from triton_runner.server import TritonStartError, server_environment

    try:
        names = render_cpu(args.source, args.out, args.source, args.variant, True, args.intra_op_threads)
        command = build_command(args.out.resolve(), args.workdir.resolve(), args.address,
                                args.http_port, args.grpc_port, args.metrics_port)
    except (RenderError, TritonStartError) as exc:
        print(f"[mm-triton-cpu] {exc}", file=sys.stderr)
        return 2
    print(f"[mm-triton-cpu] rendered {len(names)} models ({', '.join(names)}) into {args.out}", flush=True)
    if args.dry_run:
        print(" ".join(command))
        return 0
    # exec: tritonserver becomes PID 1 and receives SIGTERM directly (drains, then exits)
    os.execve(command[0], command, server_environment())
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
