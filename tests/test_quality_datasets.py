"""Data adapters: catalog JSONL/CSV, Conceptual Captions TSV, Fashion-MNIST IDX."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from quality.datasets import load_catalog, load_cc_tsv, load_fashion_mnist, load_karpathy
from quality.sample_catalog import find_fashion_mnist
from quality.vocabulary import train_texts


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
    pairs = load_fashion_mnist("test", limit=50, subset=True)
    train, val = pairs.split(0.2, seed=1)
    assert len(train) == 40 and len(val) == 10
    assert set(train.ids).isdisjoint(val.ids)
    for i in range(len(val)):
        label = int(val.labels[i])
        assert val.texts[i] == train_texts(pairs.class_names[label])


def test_fashion_mnist_subset_shipped():
    """The fixture in quality/data: balanced, real photos, dark product on a light background after loading."""
    pairs = load_fashion_mnist("train", subset=True)
    assert pairs.images.shape == (2500, 28, 28) and pairs.images.dtype == np.uint8
    assert np.bincount(pairs.labels).tolist() == [250] * 10
    assert np.median(pairs.images[:, 0, :]) > 200
    assert pairs.pil(0).size == (112, 112)
    texts = train_texts("Ankle boot")
    assert "a photo of a ankle boot" in texts and "boots" in texts and len(set(texts)) == len(texts)


@pytest.mark.skipif(find_fashion_mnist() is None, reason="the Debian Fashion-MNIST files are not installed (the subset test covers the loader)")
def test_fashion_mnist_idx_matches_subset():
    full = load_fashion_mnist("test")
    with np.load("quality/data/fashion_mnist_subset.npz") as data:
        index = data["test_index"]
        assert np.array_equal(full.images[index], 255 - data["test_images"])


def test_karpathy_json_coco_and_flickr(tmp_path):
    """dataset_coco.json / dataset_flickr30k.json: one split's images with their captions; COCO filepath honoured."""
    (tmp_path / "val2014").mkdir()
    _image(tmp_path / "val2014" / "COCO_val2014_1.jpg", "red")  # JPEG: colours within a step
    _image(tmp_path / "b.jpg", "blue")
    coco = {"images": [
        {"filepath": "val2014", "filename": "COCO_val2014_1.jpg", "split": "test", "cocoid": 1,
         "sentences": [{"raw": "A red square.", "tokens": ["a", "red", "square"]}, {"raw": "Red.", "tokens": ["red"]}]},
        {"filepath": "val2014", "filename": "COCO_val2014_2.jpg", "split": "train", "cocoid": 2, "sentences": [{"raw": "x"}]},
    ]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(coco))
    pairs = load_karpathy(tmp_path / "dataset_coco.json")
    assert pairs.ids == ["1"] and pairs.texts == [["A red square.", "Red."]]
    assert pairs.pil(0).getpixel((0, 0))[0] > 250
    flickr = {"images": [{"filename": "b.jpg", "split": "test", "imgid": 7, "sentences": [{"tokens": ["a", "blue", "square"]}]}]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(flickr))
    pairs = load_karpathy(tmp_path / "dataset_flickr30k.json")
    assert pairs.texts == [["a blue square"]] and pairs.images[0] == tmp_path / "b.jpg"
    with pytest.raises(ValueError, match="no images in split"):
        load_karpathy(tmp_path / "dataset_flickr30k.json", split="val")


def test_recall_at_k_by_hand():
    from quality.retrieval import captions_of, recall_at

    image = np.eye(3, dtype=np.float32)
    text = np.array([[1, 0, 0], [0.2, 0.9, 0], [0.8, 0.1, 0.5], [0, 0, 1]], np.float32)  # captions of images 0, 1, 2, 2
    out = recall_at(text, image, [0, 1, 2, 2], ks=(1, 2))
    assert out == {"R@1": 0.75, "R@2": 1.0}  # caption 2 ranks its image second
    from quality.datasets import PairSet

    assert captions_of(PairSet(images=[], texts=[["a", "b"], ["c"]])) == (["a", "b", "c"], [0, 0, 1])
