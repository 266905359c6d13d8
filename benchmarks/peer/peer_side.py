"""The clip-retrieval peer's side of the benchmark: runs INSIDE the peer's own venv (setup_venv.sh).

    python peer_side.py prepare --vectors V.npy --out DIR [--arch ViT-B-32] [--nlist 1024 --nprobe 32]
    python peer_side.py serve --dir DIR --port P
    python peer_side.py inference --input FOLDER --out OUT [--batch 64 --workers 2] [--no-text]

prepare: an open_clip checkpoint of random weights saved to a file (no hub here), a faiss
IVF<nlist>,Flat inner-product index over the given vectors (the same ones our store holds) with
nprobe saved in it, metadata parquet and indices_paths.json, the layout `clip_back` reads.
serve: `clip_back` as shipped (Flask, PyTorch eager) with two local changes only: Flask binds
127.0.0.1 instead of 0.0.0.0, and options that need the internet are off (mclip, aesthetic
embeddings). inference: clip-retrieval's `inference` command; 2.45.0 fails on `--input_format
files` with text enabled (it keys images and captions by their file names *with* extensions, so
`a.jpg` never meets `a.txt`: KeyError); we re-key both by the name without extension, as its
open PR #353 does, by replacing `reader.folder_to_keys` before the command runs.

Imports only the peer's packages and the standard library (never this project's code).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _model_configs(folder: str | None) -> None:
    """Register extra open_clip model configs (the smoke test's tiny architecture)."""
    if folder:
        import open_clip

        open_clip.add_model_config(folder)


def _torchvision_shim() -> None:
    # torchvision 0.28's compiled ops do not load here; open_clip imports it (see FACTS.md)
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_shim.lib = lib  # keep the library alive


def prepare(args) -> None:
    import faiss
    import numpy as np
    import pandas as pd
    import torch

    _torchvision_shim()
    import open_clip

    _model_configs(args.model_configs)
    out = Path(args.out)
    (out / "index" / "metadata").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = open_clip.create_model(args.arch, pretrained=None)
    torch.save(model.state_dict(), out / "checkpoint.pt")
    vectors = np.load(args.vectors).astype("float32")
    started = time.perf_counter()
    index = faiss.index_factory(vectors.shape[1], f"IVF{args.nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    faiss.extract_index_ivf(index).nprobe = args.nprobe
    faiss.write_index(index, str(out / "index" / "image.index"))
    pd.DataFrame({"url": [f"p{i}" for i in range(len(vectors))], "caption": [f"product {i}" for i in range(len(vectors))]}).to_parquet(
        out / "index" / "metadata" / "0.parquet"
    )
    (out / "indices_paths.json").write_text(json.dumps({"products": str(out / "index")}))
    print(json.dumps({"vectors": len(vectors), "index_build_s": round(time.perf_counter() - started, 2), "dir": str(out)}))


def serve(args) -> None:
    _torchvision_shim()
    import flask

    run = flask.Flask.run

    def local_run(self, host=None, port=None, **kwargs):
        return run(self, host="127.0.0.1", port=port, **kwargs)

    flask.Flask.run = local_run
    _model_configs(args.model_configs)
    from clip_retrieval.clip_back import clip_back

    directory = Path(args.dir)
    clip_back(
        indices_paths=str(directory / "indices_paths.json"),
        port=args.port,
        columns_to_return=["url", "caption"],
        clip_model=f"open_clip:{args.arch}/{directory / 'checkpoint.pt'}",
        enable_mclip_option=False,
        provide_aesthetic_embeddings=False,
        use_jit=False,
    )


def inference(args) -> None:
    _torchvision_shim()
    from pathlib import Path as _Path

    import importlib

    reader = importlib.import_module("clip_retrieval.clip_inference.reader")

    original = reader.folder_to_keys

    def folder_to_keys(folder, enable_text=True, enable_image=True, enable_metadata=False):
        """PR #353's fix: key every file by its relative path without the extension."""
        keys, text_files, image_files, metadata_files = original(folder, enable_text, enable_image, enable_metadata)

        def rekey(files):
            return None if files is None else {_Path(k).with_suffix("").as_posix(): v for k, v in files.items()}

        text_files, image_files, metadata_files = rekey(text_files), rekey(image_files), rekey(metadata_files)
        sets = [set(f) for f in (text_files, image_files, metadata_files) if f is not None]
        keys = sorted(set.intersection(*sets)) if sets else []
        return keys, text_files, image_files, metadata_files

    reader.folder_to_keys = folder_to_keys
    _model_configs(args.model_configs)
    importlib.import_module("clip_retrieval.clip_inference.main")
    inference_main = sys.modules["clip_retrieval.clip_inference.main"].main

    started = time.perf_counter()
    inference_main(
        input_dataset=args.input,
        output_folder=args.out,
        input_format="files",
        batch_size=args.batch,
        num_prepro_workers=args.workers,
        enable_text=not args.no_text,
        enable_image=True,
        clip_model=f"open_clip:{args.arch}/{args.checkpoint}",
        use_jit=False,
        use_mclip=False,
    )
    print(json.dumps({"inference_s": round(time.perf_counter() - started, 3)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--vectors", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--arch", default="ViT-B-32")
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--nprobe", type=int, default=32)
    s = sub.add_parser("serve")
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--arch", default="ViT-B-32")
    i = sub.add_parser("inference")
    i.add_argument("--input", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--arch", default="ViT-B-32")
    i.add_argument("--batch", type=int, default=64)
    i.add_argument("--workers", type=int, default=2)
    i.add_argument("--no-text", action="store_true")
    for command in (p, s, i):
        command.add_argument("--model-configs", help="a folder of extra open_clip model configs (JSON)")
    args = parser.parse_args()
    {"prepare": prepare, "serve": serve, "inference": inference}[args.command](args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
