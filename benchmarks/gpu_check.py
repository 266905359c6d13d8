"""One-shot GPU check: CLIP ViT-B-32 encoder throughput per engine and batch, preprocessing, BLIP caption latency.

Usage: python benchmarks/gpu_check.py [--budget-s 480] [--json out.json] [--repository EXPORT] [--cpu]

On a machine with an NVIDIA GPU (torch.cuda and ONNX Runtime's CUDA provider), within --budget-s:
  1. exports CLIP ViT-B-32 (random weights: throughput does not depend on them; --repository reuses an
     export) with its fp16 variant, and a BLIP captioner of base size (random weights, BLIP-base config);
  2. image and text encoder throughput (items/s) at batch 1, 2, 4, ..., 256 for PyTorch eager fp16,
     ONNX Runtime CUDA fp16 (model.fp16.onnx) and ONNX Runtime TensorRT fp16 (model.onnx, TensorRT
     builds fp16 engines for one shape profile 1..256); numpy in and out, so host<->device copies are
     included, as in a server;
  3. preprocessing throughput: Pillow on a thread pool (CPU) vs NVIDIA DALI (nvJPEG decode + resize on
     the GPU), on real photos as JPEG uploads, and DALI's mean abs pixel difference to Pillow (8-bit levels);
  4. BLIP caption latency at batch 1 and 16 (ONNX Runtime CUDA, greedy, KV cache).
Each step that cannot run says why in the JSON ("skipped"). Prints one JSON document.

Without a GPU (or with --cpu) it runs a short CPU version and says so ("mode": "cpu"): the tiny preset
(or --repository), batches 1 and 8, PyTorch eager fp32 and ONNX Runtime CPU fp32, Pillow preprocessing,
tiny-BLIP caption latency. tests/test_gpu_check.py runs that in CI.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from preprocessing.image import ImageSpec, preprocess_each  # noqa: E402
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, Manifest  # noqa: E402

GPU_BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
CPU_BATCHES = [1, 8]
# BLIP base (Salesforce/blip-image-captioning-base) sizes, random weights; the tiny WordPiece vocabulary
# (a smaller output layer than BLIP's 30524 tokens: the decoder's 12 layers dominate the latency).
BLIP_BASE_CONFIG = {"config": {"text_config": {"num_attention_heads": 12}, "vision_config": {"image_size": 384}},
                    "seed": 0, "tokenizer": "tiny", "prompt": "a picture of", "max_new_tokens": 20, "itm": False}
TARGET = "clip-retrieval: ~2,500 images/s for ViT-B-32 per A100; target on an H100/H200: >= 10,000 images/s (image encoder)"


class Budget:
    """Wall-clock budget shared by the steps; a step that would start past it is skipped, and says so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def throughput(run: Callable[[], Any], items: int, min_seconds: float, max_iters: int = 1000) -> float:
    """Items/s of `run` (one warm-up call, then as many calls as fit in min_seconds)."""
    run()
    iters, started = 0, time.perf_counter()
    while iters < max_iters and (iters < 2 or time.perf_counter() - started < min_seconds):
        run()
        iters += 1
    return round(items * iters / (time.perf_counter() - started), 1)


def gpu_available() -> tuple[bool, str]:
    try:
        import onnxruntime as ort
        import torch
    except ImportError as exc:
        return False, f"no torch/onnxruntime: {exc}"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu: the `gpu` extra)"
    return True, torch.cuda.get_device_name(0)


def export_models(out: Path, arch: str, gpu: bool) -> Manifest:
    from export.cli import run_export
    from export.presets import load_preset

    clip = {"arch": arch, "pretrained": None}
    blip = BLIP_BASE_CONFIG if gpu else load_preset("tiny")["blip"]
    run_export({"preset": "gpu-check", "clip": clip, "blip": blip}, out, 17, ["fp16"] if gpu else [], log=lambda _m: None)
    return Manifest.load(out)


def inputs(manifest: Manifest, batch: int) -> dict[str, dict[str, np.ndarray]]:
    height, width = manifest.image_spec("clip").size
    context = int(manifest.clip["tokenizer"]["context_length"])
    rng = np.random.default_rng(0)
    return {
        CLIP_IMAGE: {"pixel_values": rng.standard_normal((batch, 3, height, width), dtype=np.float32)},
        CLIP_TEXT: {"input_ids": rng.integers(1, 1000, (batch, context), dtype=np.int64)},
    }


def torch_eager(manifest: Manifest, batches: list[int], gpu: bool, min_seconds: float, budget: Budget) -> dict[str, dict]:
    import torch

    from export.clip import load_clip

    torch.manual_seed(0)
    model, _, _ = load_clip(manifest.clip["arch"], None)
    device, dtype = ("cuda", torch.float16) if gpu else ("cpu", torch.float32)
    model = model.to(device=device, dtype=dtype).eval()
    result: dict[str, dict] = {CLIP_IMAGE: {}, CLIP_TEXT: {}}
    for batch in batches:
        if budget.left() < 0:
            break
        feeds = inputs(manifest, batch)
        pixels = torch.from_numpy(feeds[CLIP_IMAGE]["pixel_values"]).to(device=device, dtype=dtype)
        ids = torch.from_numpy(feeds[CLIP_TEXT]["input_ids"]).to(device)

        def run(fn, arg):
            def call():
                with torch.no_grad():
                    out = fn(arg)
                if gpu:
                    torch.cuda.synchronize()
                return out
            return call

        result[CLIP_IMAGE][batch] = throughput(run(model.encode_image, pixels), batch, min_seconds)
        result[CLIP_TEXT][batch] = throughput(run(model.encode_text, ids), batch, min_seconds)
    return result


def ort_engine(manifest: Manifest, batches: list[int], providers: Callable[[str], list], variant: str, min_seconds: float,
               budget: Budget) -> dict[str, dict]:
    from runtime.sessions import create_session

    result: dict[str, dict] = {}
    for name in (CLIP_IMAGE, CLIP_TEXT):
        session = create_session(manifest.graph_path(name, variant), providers(name))
        result[name] = {}
        for batch in batches:
            if budget.left() < 0:
                break
            feeds = inputs(manifest, batch)[name]
            result[name][batch] = throughput(lambda: session.run(None, feeds), batch, min_seconds)
    return result


def tensorrt_providers(manifest: Manifest, cache: Path, max_batch: int, name: str) -> list:
    """TensorRT fp16 with one shape profile (batch 1..max_batch, optimum 64), so engines are built once."""
    height, width = manifest.image_spec("clip").size
    context = int(manifest.clip["tokenizer"]["context_length"])
    if name == CLIP_IMAGE:
        shapes = lambda b: f"pixel_values:{b}x3x{height}x{width}"  # noqa: E731
    else:
        shapes = lambda b: f"input_ids:{b}x{context}"  # noqa: E731
    options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / name),
               "trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(64), "trt_profile_max_shapes": shapes(max_batch)}
    return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]


def photo_uploads(count: int) -> list[bytes]:
    """Real photographs (scikit-image) as JPEG uploads of a few sizes."""
    from PIL import Image
    from skimage import data

    photos = [data.coffee(), data.chelsea(), data.astronaut(), data.rocket()]
    blobs = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photos[index % len(photos)]).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def preprocessing_step(spec: ImageSpec, gpu: bool, count: int, min_seconds: float) -> dict[str, Any]:
    from preprocessing.dali_image import DaliPreprocessor, dali_available

    blobs = photo_uploads(count)
    threads = os.cpu_count() or 1
    with ThreadPoolExecutor(threads) as pool:
        result: dict[str, Any] = {"images": count, "image_size": list(spec.size), "threads": threads,
                                  "pillow_cpu_images_per_s": throughput(lambda: preprocess_each(blobs, spec, map_fn=pool.map), count, min_seconds, 50)}
        reason = dali_available()
        if reason:
            result["dali"] = f"skipped: {reason}"
            return result
        device = "gpu" if gpu else "cpu"
        try:
            dali = DaliPreprocessor(spec, max_batch=min(count, 64), device=device, threads=min(threads, 8))
        except Exception as exc:  # noqa: BLE001 - e.g. square-only geometry
            result["dali"] = f"skipped: {exc}"
            return result
        result[f"dali_{device}_images_per_s"] = throughput(lambda: dali(blobs, pool.map), count, min_seconds, 50)
        ours, reference = dali(blobs[:8]), preprocess_each(blobs[:8], spec)
        levels = np.asarray(spec.std, np.float32).reshape(3, 1, 1) * 255
        result["dali_vs_pillow_mean_abs_levels"] = round(float(np.mean([np.abs((a - b) * levels).mean() for a, b in zip(ours, reference)])), 3)
    return result


def caption_step(manifest: Manifest, gpu: bool, budget: Budget) -> dict[str, Any]:
    from runtime.caption import BlipCaptioner

    if manifest.blip is None:
        return {"skipped": "the export has no BLIP captioner"}
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    captioner = BlipCaptioner(manifest, providers=providers)
    height, width = captioner.image_spec.size
    result: dict[str, Any] = {"max_new_tokens": captioner.max_new_tokens}
    for batch in (1, 16):
        if budget.left() < 0:
            result[f"b{batch}_ms"] = "skipped: out of time"
            continue
        pixels = np.random.default_rng(0).standard_normal((batch, 3, height, width), dtype=np.float32)
        captioner.caption(pixels)  # warm-up (CUDA kernels, memory arenas)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            captioner.caption(pixels)
            times.append(time.perf_counter() - started)
        result[f"b{batch}_ms"] = round(1e3 * float(np.median(times)), 1)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    budget = Budget(args.budget_s)
    gpu, device = (False, "forced --cpu") if args.cpu else gpu_available()
    report: dict[str, Any] = {
        "mode": "gpu" if gpu else "cpu",
        "device": device if gpu else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "note": ("GPU check" if gpu else f"no GPU ({device}): the short CPU version (small batches, fp32, CPU engines); "
                 "the GPU figures need a machine with an NVIDIA GPU"),
        "target": TARGET,
        "command": "python " + " ".join(sys.argv),
    }
    batches = args.batches or (GPU_BATCHES if gpu else CPU_BATCHES)
    min_seconds = args.min_seconds if args.min_seconds is not None else (1.0 if gpu else 0.2)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        if args.repository:
            manifest = Manifest.load(args.repository)
        else:
            t = time.monotonic()
            manifest = export_models(tmp / "export", args.arch if gpu else "mm-tiny-clip", gpu)
            report["export_s"] = round(time.monotonic() - t, 1)
        report["clip"] = {"arch": manifest.clip["arch"], "image_size": list(manifest.image_spec("clip").size), "batches": batches}
        engines: dict[str, Any] = {}
        engines["torch_eager_fp16" if gpu else "torch_eager_fp32"] = torch_eager(manifest, batches, gpu, min_seconds, budget)
        if gpu:
            engines["ort_cuda_fp16"] = ort_engine(manifest, batches, lambda _n: ["CUDAExecutionProvider"], "fp16", min_seconds, budget)
            try:
                trt = lambda name: tensorrt_providers(manifest, tmp / "trt", max(batches), name)  # noqa: E731
                engines["ort_tensorrt_fp16"] = ort_engine(manifest, batches, trt, "fp32", min_seconds, budget)
            except Exception as exc:  # noqa: BLE001 - TensorRT libraries missing, unsupported node...
                engines["ort_tensorrt_fp16"] = f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        else:
            engines["ort_cpu_fp32"] = ort_engine(manifest, batches, lambda _n: ["CPUExecutionProvider"], "fp32", min_seconds, budget)
            engines["ort_cuda_fp16"] = engines["ort_tensorrt_fp16"] = "skipped: no GPU"
        report["encoders_items_per_s"] = engines
        report["preprocessing"] = preprocessing_step(manifest.image_spec("clip"), gpu, 256 if gpu else 16, min_seconds)
        report["blip_caption"] = caption_step(manifest, gpu, budget)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["within_budget"] = budget.left() >= 0
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget (default 480 s: 8 minutes)")
    parser.add_argument("--arch", default="ViT-B-32", help="open_clip architecture exported on a GPU (default ViT-B-32)")
    parser.add_argument("--repository", type=Path, help="reuse this export instead of exporting")
    parser.add_argument("--batches", type=int, nargs="+", help="batch sizes (default: 1..256 on a GPU, 1 8 on CPU)")
    parser.add_argument("--min-seconds", type=float, help="measuring time per cell (default 1.0 on a GPU, 0.2 on CPU)")
    parser.add_argument("--cpu", action="store_true", help="run the CPU version even where a GPU is present")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
