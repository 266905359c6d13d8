"""Build gRPC inputs for the gateway-facing models and read their statistics (tests and benchmark)."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient

from runtime.triton_contract import IMAGE_BYTES, TEXT


def bytes_input(name: str, items: Sequence[bytes]) -> "grpcclient.InferInput":
    """A [N, 1] BYTES tensor (tritonclient.grpc.aio uses the same InferInput class)."""
    data = np.array([[item] for item in items], dtype=object).reshape(len(items), 1)
    tensor = grpcclient.InferInput(name, list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return tensor


def text_input(texts: Sequence[str | bytes]) -> "grpcclient.InferInput":
    return bytes_input(TEXT, [t.encode("utf-8") if isinstance(t, str) else t for t in texts])


def image_input(blobs: Sequence[bytes]) -> "grpcclient.InferInput":
    return bytes_input(IMAGE_BYTES, blobs)


def counts(client: grpcclient.InferenceServerClient, model: str) -> dict[str, int]:
    """Cumulative inference (rows), execution (batches run) and request success/failure counts."""
    stats = client.get_inference_statistics(model_name=model).model_stats[0]
    return {
        "inferences": stats.inference_count,
        "executions": stats.execution_count,
        "success": stats.inference_stats.success.count,
        "fail": stats.inference_stats.fail.count,
    }


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def served_since(client: grpcclient.InferenceServerClient, model: str, before: dict[str, int], requests: int,
                 timeout: float = 10.0) -> dict[str, int]:
    """Counts since `before`, once the server has booked `requests` requests: Triton updates its
    statistics after the responses are sent, so a client can see its answers before the counts move."""
    deadline = time.monotonic() + timeout
    while True:
        used = delta(counts(client, model), before)
        if used["success"] + used["fail"] >= requests or time.monotonic() > deadline:
            return used
        time.sleep(0.05)


def settled_counts(client: grpcclient.InferenceServerClient, model: str, interval: float = 0.1,
                   timeout: float = 10.0) -> dict[str, int]:
    """`counts` once two reads `interval` apart agree: a baseline that earlier requests no longer move."""
    deadline = time.monotonic() + timeout
    last = counts(client, model)
    while True:
        time.sleep(interval)
        now = counts(client, model)
        if now == last or time.monotonic() > deadline:
            return now
        last = now
