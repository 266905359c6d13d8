"""CPU kernels for the CLIP towers: engine x precision, speed and what each does to rankings.

Usage: python -m benchmarks.kernels [--arch ViT-B-32] [--batches 1 8 32] [--seconds 3] [--json out.json]

One export (random weights: compute does not depend on them) with the fp32 graph, ONNX Runtime's
dynamic int8 and the calibrated static int8 QDQ graph (export --int8 --int8-static), each run on
ONNX Runtime and OpenVINO through runtime.sessions.create_session, the code path the local
backend and Triton's CPU models use. Timing: median ms per item, all variants round-robin.
Rankings: a catalog of Fashion-MNIST test photos, text and image queries, top-10 of each variant
against top-10 of ORT fp32 (recall@10) and the smallest cosine of its embeddings to fp32's.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import interleaved_ms_per_item, progress
from preprocessing.clip_tokenizer import ClipTokenizer
from preprocessing.image import preprocess_images
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, Manifest
from runtime.sessions import create_session

# (label, engine, graph variant)
VARIANTS = [
    ("ort-fp32", "onnxruntime", "fp32"),
    ("ort-int8-dynamic", "onnxruntime", "int8"),
    ("ort-int8-static", "onnxruntime", "int8_static"),
    ("openvino-fp32", "openvino", "fp32"),
    ("openvino-bf16", "openvino-bf16", "fp32"),
    ("openvino-int8-static", "openvino", "int8_static"),
]
INPUTS = {CLIP_IMAGE: "pixel_values", CLIP_TEXT: "input_ids"}


def export_repository(arch: str, out: Path) -> Manifest:
    from export.cli import run_export

    config = {"preset": "bench", "clip": {"arch": arch, "pretrained": None}, "blip": None}
    run_export(config, out, 17, ["int8", "int8_static"], log=lambda m: None)
    return Manifest.load(out)


def evaluation_set(catalog_size: int, queries: int) -> tuple[list, list[str], list]:
    """Fashion-MNIST test photos (catalog and image queries) and product-title text queries."""
    from export.calibration import calibration_texts
    from export.sample_inputs import sample_images
    from PIL import Image

    try:
        from quality.sample_catalog import find_fashion_mnist, read_idx

        folder = find_fashion_mnist()
        pixels = read_idx(folder / "t10k-images-idx3-ubyte.gz")[: catalog_size + queries]
        photos = [Image.fromarray(255 - p).convert("RGB") for p in pixels]
    except (TypeError, OSError):  # dataset absent: synthetic images (say so in the output)
        photos = sample_images(catalog_size + queries, seed=7)
    texts = calibration_texts(queries + 64, seed=11)[64:]  # disjoint from the calibration texts' seed range
    return photos[:catalog_size], texts, photos[catalog_size:]


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean share of the reference top-k found in the candidate top-k (rows: queries, cols: catalog)."""
    ref = np.argsort(-reference, axis=1)[:, :k]
    got = np.argsort(-candidate, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref, got)]))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def _sessions(manifest: Manifest, threads: int) -> dict:
    return {
        (label, name): create_session(manifest.graph_path(name, variant), ["CPUExecutionProvider"], threads or None, engine=engine)
        for label, engine, variant in VARIANTS
        for name in INPUTS
    }


def rankings(manifest: Manifest, sessions: dict, catalog: list, text_queries: list[str], image_queries: list) -> dict:
    """recall@10 of every variant's top 10 against ORT fp32's, and min cosine of the embeddings."""
    spec = manifest.image_spec("clip")
    tokenizer = ClipTokenizer.from_manifest_entry(manifest.repository, manifest.clip["tokenizer"])
    catalog_pixels = preprocess_images(catalog, spec)
    query_pixels = preprocess_images(image_queries, spec)
    query_ids = tokenizer(text_queries)

    def embed(label: str, name: str, values: np.ndarray) -> np.ndarray:
        session = sessions[(label, name)]
        return np.concatenate([session.run(None, {INPUTS[name]: values[i : i + 16]})[0] for i in range(0, len(values), 16)])

    embeddings = {
        label: {"catalog": embed(label, CLIP_IMAGE, catalog_pixels), "image_q": embed(label, CLIP_IMAGE, query_pixels),
                "text_q": embed(label, CLIP_TEXT, query_ids)}
        for label, _, _ in VARIANTS
    }
    ref = embeddings["ort-fp32"]
    quality = {}
    for label, e in embeddings.items():
        quality[label] = {
            "recall10_text": recall_at_k(ref["text_q"] @ ref["catalog"].T, e["text_q"] @ e["catalog"].T),
            "recall10_image": recall_at_k(ref["image_q"] @ ref["catalog"].T, e["image_q"] @ e["catalog"].T),
            "min_cosine_image": min_cosine(ref["catalog"], e["catalog"]),
            "min_cosine_text": min_cosine(ref["text_q"], e["text_q"]),
        }
    return quality


def run(arch: str = "ViT-B-32", batches=(1, 8, 32), seconds: float = 3.0, catalog_size: int = 300, queries: int = 40,
        threads: int = 0, repository: Path | None = None, quality_repository: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if repository is None:
            progress(f"kernels: exporting {arch} (random weights) with int8 and calibrated int8_static ...")
            manifest = export_repository(arch, Path(tmp) / "repo")
        else:
            manifest = Manifest.load(repository)
        export_s = time.perf_counter() - started
        spec = manifest.image_spec("clip")
        tokenizer = ClipTokenizer.from_manifest_entry(manifest.repository, manifest.clip["tokenizer"])
        sessions = _sessions(manifest, threads)
        catalog, text_queries, image_queries = evaluation_set(catalog_size, queries)
        max_batch = max(batches)
        data = {
            CLIP_IMAGE: preprocess_images((catalog * (max_batch // len(catalog) + 1))[:max_batch], spec),
            CLIP_TEXT: tokenizer((text_queries * (max_batch // len(text_queries) + 1))[:max_batch]),
        }
        timing = []
        for name, input_name in INPUTS.items():
            for batch in batches:
                progress(f"kernels: timing {name} batch {batch}")
                feed = data[name][:batch]
                runs = {label: (lambda s=sessions[(label, name)]: s.run(None, {input_name: feed})) for label, _, _ in VARIANTS}
                times = interleaved_ms_per_item(runs, batch, seconds, min_repeats=3)
                timing.append({"encoder": name, "batch": batch, "ms_per_item": times,
                               "speedup_vs_ort_fp32": {k: times["ort-fp32"] / v for k, v in times.items()}})

        progress(f"kernels: rankings over {len(catalog)} photos, {len(text_queries)} text + {len(image_queries)} image queries")
        quality = rankings(manifest, sessions, catalog, text_queries, image_queries)
        trained = None
        if quality_repository is not None:
            progress(f"kernels: rankings on the trained model in {quality_repository}")
            qm = Manifest.load(quality_repository)
            qs = _sessions(qm, threads)
            trained = {"arch": qm.clip.get("arch"), "pretrained": str(qm.clip.get("pretrained")),
                       "quality": rankings(qm, qs, catalog, text_queries, image_queries)}
    return {"arch": arch, "threads": threads or "default", "export_s": export_s, "timing": timing, "quality": quality,
            "catalog_size": len(catalog), "queries": {"text": len(text_queries), "image": len(image_queries)},
            "variants": [{"label": l, "engine": e, "graph": v} for l, e, v in VARIANTS], "trained": trained}


def print_result(result: dict) -> None:
    labels = [v["label"] for v in result["variants"]]
    print(f"\n{'encoder':<11} {'batch':>5} " + " ".join(f"{l:>21}" for l in labels))
    for row in result["timing"]:
        cells = " ".join(f"{row['ms_per_item'][l]:>11.2f} ({row['speedup_vs_ort_fp32'][l]:4.2f}x)   " for l in labels)
        print(f"{row['encoder']:<11} {row['batch']:>5} {cells}")
    print("\nrecall@10 vs ORT fp32 (text / image queries), min cosine to fp32 (image / text):")
    for title, quality in (("random weights", result["quality"]), ("trained", (result.get("trained") or {}).get("quality"))):
        if not quality:
            continue
        print(f" {title}:")
        for label, q in quality.items():
            print(f"  {label:<22} {q['recall10_text']:.3f} / {q['recall10_image']:.3f}   {q['min_cosine_image']:.4f} / {q['min_cosine_text']:.4f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per cell")
    parser.add_argument("--catalog", type=int, default=300)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the engine's default)")
    parser.add_argument("--repository", type=Path, help="reuse an export made with --int8 --int8-static")
    parser.add_argument("--quality-repository", type=Path, help="also rank with this export of a trained CLIP (made with --int8 --int8-static)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.arch, args.batches, args.seconds, args.catalog, args.queries, args.threads, args.repository, args.quality_repository)
    print_result(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
