"""Text->image retrieval R@1/5/10 on captioned images (COCO / Flickr30k Karpathy split, Conceptual Captions TSV):
the exported ONNX path (vectors from the gateway's Embed) beside open_clip in PyTorch on the same checkpoint.

Protocol of the CLIP papers (and open_clip's published table, e.g. ViT-B-32 laion2b_s34b_b79k: Flickr30k
1k test text->image R@1 66.8, COCO 5k test 39.3): every caption is a query, its image is the one relevant
item, R@K = share of captions whose image is in the top K of all the split's images.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from quality.datasets import PairSet


def recall_at(text: np.ndarray, image: np.ndarray, owner: Sequence[int], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K of text rows against image rows; `owner[i]` is the image of caption i."""
    scores = text @ image.T
    own = scores[np.arange(len(owner)), np.asarray(owner)]
    rank = (scores > own[:, None]).sum(axis=1)  # 0 = first (ties count in the query's favour)
    return {f"R@{k}": float(np.mean(rank < k)) for k in ks}


def captions_of(pairs: PairSet) -> tuple[list[str], list[int]]:
    texts, owner = [], []
    for i, captions in enumerate(pairs.texts):
        texts.extend(captions)
        owner.extend([i] * len(captions))
    return texts, owner


def _png(pairs: PairSet, i: int) -> bytes:
    buffer = io.BytesIO()
    pairs.pil(i).save(buffer, format="PNG")
    return buffer.getvalue()


def onnx_vectors(client, pairs: PairSet, texts: Sequence[str], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Text and image vectors through the gateway's Embed (tokenizer, preprocessing and ONNX graphs of serving)."""
    tv = [np.asarray(v.values, np.float32) for s in range(0, len(texts), batch) for v in client.embed(texts=texts[s:s + batch]).text_vectors]
    iv = [np.asarray(v.values, np.float32) for s in range(0, len(pairs), batch)
          for v in client.embed(images=[_png(pairs, i) for i in range(s, min(s + batch, len(pairs)))]).image_vectors]
    return np.stack(tv), np.stack(iv)


def run_retrieval(pairs: PairSet, repository: Path, address: str | None = None, workdir: Path = Path("runs/retrieval-work"),
                  reference: bool = True, gateway: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    texts, owner = captions_of(pairs)
    out: dict[str, Any] = {"images": len(pairs), "captions": len(texts)}
    if reference:
        from quality.reference import ReferenceModel

        model = ReferenceModel(repository)
        out["pytorch"] = recall_at(model.texts(texts), model.images(pairs.pil(i) for i in range(len(pairs))), owner)
        log(f"[retrieval] PyTorch reference: {out['pytorch']}")
    if not gateway:
        return out
    from client.sync import SearchClient
    from quality.system import start_gateway

    proc = None
    if address is None:
        proc = start_gateway(repository, workdir, [], log)
        address = proc.address
    try:
        with SearchClient(address, timeout=120) as client:
            client.wait_until_serving(timeout=300)
            text, image = onnx_vectors(client, pairs, texts)
            out["onnx_gateway"] = recall_at(text, image, owner)
            log(f"[retrieval] ONNX through the gateway: {out['onnx_gateway']}")
    finally:
        if proc is not None:
            proc.stop()
    return out
