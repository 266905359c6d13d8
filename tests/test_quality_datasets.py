"""Data adapters: catalog JSONL/CSV, Conceptual Captions TSV, Fashion-MNIST IDX."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from quality.datasets import (category_queries, fashion_mnist_texts, load_catalog, load_cc_tsv,
                              load_fashion_mnist)
from quality.sample_catalog import find_fashion_mnist


def _image(path, colour):
    Image.new("RGB", (20, 20), colour).save(path)


def test_catalog_jsonl_and_csv(tmp_path):
    (tmp_path / "img").mkdir()
    _image(tmp_path / "img" / "a.png", "red")
    _image(tmp_path / "img" / "b.png", "blue")
    rows = [
        {"id": "a", "image": "img/a.png", "title": "Red dress", "category": "Dress"},
        {"id": "b", "image": "img/b.png", "title": "Blue bag", "caption": "a blue leather bag", "category": "Bag"},
        {"id": "c", "title": "no image: skipped", "category": "Bag"},
    ]
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = load_catalog(tmp_path / "catalog.jsonl")
    assert len(pairs) == 2 and pairs.ids == ["a", "b"]
    assert pairs.texts[1] == ["Blue bag", "a blue leather bag"]
    assert pairs.class_names == ["Bag", "Dress"] and pairs.labels.tolist() == [1, 0]
    assert pairs.pil(0).getpixel((0, 0)) == (255, 0, 0)

    (tmp_path / "catalog.csv").write_text("id,image,title,category\na,img/a.png,Red dress,Dress\nb,img/b.png,Blue bag,\n")
    csv_pairs = load_catalog(tmp_path / "catalog.csv")
    assert csv_pairs.texts == [["Red dress"], ["Blue bag"]]
    assert csv_pairs.labels is None  # a missing category: no labels (plain InfoNCE)


def test_cc_tsv_with_header(tmp_path):
    _image(tmp_path / "x.jpg", "green")
    (tmp_path / "cc.tsv").write_text("caption\timage\na green square on white\tx.jpg\n\nsecond caption\tx.jpg\n")
    pairs = load_cc_tsv(tmp_path / "cc.tsv")
    assert [t[0] for t in pairs.texts] == ["a green square on white", "second caption"]
    assert pairs.images[0] == tmp_path / "x.jpg" and pairs.labels is None
    (tmp_path / "bad.tsv").write_text("only a caption\n")
    with pytest.raises(ValueError, match="caption<TAB>image"):
        load_cc_tsv(tmp_path / "bad.tsv")


def test_split_and_subset_keep_alignment():
    pairs = load_fashion_mnist("test", limit=50) if find_fashion_mnist() else None
    if pairs is None:
        pytest.skip("Fashion-MNIST not installed")
    train, val = pairs.split(0.2, seed=1)
    assert len(train) == 40 and len(val) == 10
    assert set(train.ids).isdisjoint(val.ids)
    for i in range(len(val)):
        label = int(val.labels[i])
        assert val.texts[i] == fashion_mnist_texts(pairs.class_names[label])


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not installed")
def test_fashion_mnist_idx():
    pairs = load_fashion_mnist("test", limit=30)
    assert pairs.images.shape == (30, 28, 28) and pairs.images.dtype == np.uint8
    assert len(pairs.class_names) == 10 and pairs.labels.max() < 10
    # dark product on a light background, as the sample catalog shows it; upscaled like the catalog's PNGs
    assert np.median(pairs.images[:, 0, :]) > 200
    assert pairs.pil(0).size == (112, 112)
    texts = fashion_mnist_texts("Ankle boot")
    assert "a photo of a ankle boot" in texts and "boots" in texts and len(set(texts)) == len(texts)
    queries = category_queries(pairs.class_names)
    assert ("ankle boot", 9) in queries and ("a photo of a dress", 3) in queries
