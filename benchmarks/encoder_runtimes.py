"""PyTorch eager vs ONNX Runtime fp32 vs int8 for the CLIP encoders, same model, same inputs.

Usage: python benchmarks/encoder_runtimes.py [--arch ViT-B-32] [--batches 1 8 32] [--seconds 3]

Weights do not change the compute, so the architecture is built with random weights (no download).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import interleaved_ms_per_item  # noqa: E402
from export.cli import run_export  # noqa: E402
from export.clip import NormalizedImageEncoder, NormalizedTextEncoder, load_clip  # noqa: E402
from export.sample_inputs import sample_images, sample_texts  # noqa: E402
from preprocessing.clip_tokenizer import ClipTokenizer  # noqa: E402
from preprocessing.image import preprocess_images  # noqa: E402
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, Manifest  # noqa: E402
from runtime.sessions import create_session  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per cell")
    parser.add_argument("--repository", type=Path, help="reuse an export of --arch made with --int8 (else export into a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repository or Path(tmp) / "repo"
        if args.repository is None:
            print(f"exporting {args.arch} (random weights) with int8 variants ...", flush=True)
            config = {"preset": "bench", "clip": {"arch": args.arch, "pretrained": None}, "blip": None}
            run_export(config, repo, 17, ["int8"], log=lambda m: None)
        manifest = Manifest.load(repo)
        torch.manual_seed(0)
        model, spec, _ = load_clip(args.arch, None)
        tokenizer = ClipTokenizer.from_manifest_entry(repo, manifest.clip["tokenizer"])
        encoders = {CLIP_IMAGE: NormalizedImageEncoder(model).eval(), CLIP_TEXT: NormalizedTextEncoder(model).eval()}
        sessions = {
            (name, variant): create_session(manifest.graph_path(name, variant), ["CPUExecutionProvider"])
            for name in encoders
            for variant in ("fp32", "int8")
        }
        max_batch = max(args.batches)
        images = preprocess_images((sample_images(5) * (max_batch // 5 + 1))[:max_batch], spec)
        texts = tokenizer((sample_texts() * (max_batch // 5 + 1))[:max_batch])
        inputs = {CLIP_IMAGE: ("pixel_values", images), CLIP_TEXT: ("input_ids", texts)}

        rows = []
        print(f"\n{'encoder':<11} {'batch':>5} {'eager ms/item':>14} {'ORT fp32':>9} {'ORT int8':>9} {'fp32 x':>7} {'int8 x':>7}")
        for name, module in encoders.items():
            input_name, data = inputs[name]
            for batch in args.batches:
                feed = data[:batch]
                tensor = torch.from_numpy(feed)
                with torch.inference_mode():
                    times = interleaved_ms_per_item(
                        {
                            "eager": lambda: module(tensor),
                            "fp32": lambda: sessions[(name, "fp32")].run(None, {input_name: feed}),
                            "int8": lambda: sessions[(name, "int8")].run(None, {input_name: feed}),
                        },
                        batch,
                        args.seconds,
                    )
                eager, fp32, int8 = times["eager"], times["fp32"], times["int8"]
                row = {"encoder": name, "batch": batch, "eager_ms": eager, "ort_fp32_ms": fp32, "ort_int8_ms": int8,
                       "fp32_speedup": eager / fp32, "int8_speedup": eager / int8}
                rows.append(row)
                print(f"{name:<11} {batch:>5} {eager:>14.2f} {fp32:>9.2f} {int8:>9.2f} {eager / fp32:>6.2f}x {eager / int8:>6.2f}x", flush=True)
    print(f"\n{args.arch}, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU; ratios = eager / ORT")
    if args.json:
        args.json.write_text(json.dumps({"arch": args.arch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
