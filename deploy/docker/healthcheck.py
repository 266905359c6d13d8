#!/usr/bin/env python3
"""Health check of the gateway over grpc.health.v1: exit 0 when it answers SERVING, 1 otherwise.

Used by the gateway image's HEALTHCHECK and by docker-compose.yml. Kubernetes does not need it: its
native `grpc:` probes speak the same protocol. Target: argument 1, else 127.0.0.1:$MM_PORT (the
gateway's own settings variable, default 50051).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default=f"127.0.0.1:{os.environ.get('MM_PORT', '50051')}",
                        help="host:port of the gateway (default: 127.0.0.1:$MM_PORT)")
    parser.add_argument("--service", default="", help="health service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default: 3)")
    args = parser.parse_args(argv)

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(args.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        print(f"unhealthy: {args.target}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {args.target}: {status}", file=sys.stderr)
        return 1
    print(f"healthy: {args.target}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
