"""The leak-free evaluation set: disjoint vocabularies and frames, no label in the indexed text, disjoint splits,
composed modifiers that change the target, brand/SKU queries that name their product; seeded."""
from __future__ import annotations

import json
import re

from quality.datasets import fashion_mnist_arrays
from quality.evalset import SplitSizes, build_splits, leaks, write_split
from quality.vocabulary import (CATEGORIES, COMPOSE_FRAMES_TEST, COMPOSE_FRAMES_VAL, HELDOUT_SYNONYMS, TEST_FRAMES,
                                TRAIN_FRAMES, TRAIN_NOUNS, VAL_FRAMES, train_texts)

SIZES = SplitSizes(validation=200, test=300, image_queries=(30, 40), brand_queries=(20, 30))


def _splits(seed=0):
    images, labels = fashion_mnist_arrays("test", subset=True)
    return build_splits(images, labels, SIZES, seed)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_vocabularies_and_frames_are_disjoint():
    train_words = {w for nouns in TRAIN_NOUNS.values() for n in nouns for w in _words(n)}
    heldout_words = {w for syns in HELDOUT_SYNONYMS.values() for s in syns for w in _words(s)}
    assert not train_words & heldout_words, train_words & heldout_words
    frames = [set(TRAIN_FRAMES), set(VAL_FRAMES), set(TEST_FRAMES), set(COMPOSE_FRAMES_VAL), set(COMPOSE_FRAMES_TEST)]
    for i, a in enumerate(frames):
        for b in frames[i + 1:]:
            assert not a & b
    # fine-tuning texts use train frames and train nouns only
    every_train_text = {t for c in CATEGORIES for t in train_texts(c)}
    assert all(not (_words(t) & heldout_words) for t in every_train_text)
    assert not {f.format(c=n) for f in TEST_FRAMES + VAL_FRAMES for ns in TRAIN_NOUNS.values() for n in ns} & every_train_text


def test_catalog_text_does_not_carry_the_label(tmp_path):
    splits = _splits()
    for split in splits.values():
        assert leaks(split) == []
        for p in split.products:
            assert "category" not in p.description.lower()
        kinds = [p.title for p in split.products]
        assert 0.08 < sum(1 for t in kinds if not t) / len(kinds) < 0.25  # a share of empty titles
        assert any(p.sku and re.search(r"\b\d{4}-[A-Z]\b", p.title) for p in split.products)
    # no class-fixed material: materials spread over classes
    test = splits["test"]
    materials = {}
    for p in test.products:
        for m in re.findall(r"Material: (\w+)", p.description):
            materials.setdefault(m, set()).add(p.label)
    assert all(len(labels) >= 3 for labels in materials.values())
    catalog = write_split(test, tmp_path / "test")
    rows = [json.loads(line) for line in catalog.read_text().splitlines()]
    assert len(rows) == 300 and (tmp_path / "test" / rows[0]["image"]).is_file()


def test_splits_and_queries():
    splits = _splits()
    val, test = splits["validation"], splits["test"]
    assert not {p.id for p in val.products} & {p.id for p in test.products}
    assert not {p.index for p in val.products} & {p.index for p in test.products}
    assert not {q.text for q in val.queries if q.text} & {q.text for q in test.queries if q.text}
    label = test.labels()
    by_kind = {}
    for q in test.queries:
        by_kind.setdefault(q.kind, []).append(q)
    assert len(by_kind["text"]) >= 200
    for q in by_kind["composed"]:
        own = label[q.image_id]
        assert q.exclude == q.image_id and q.relevant and all(label[r] != own for r in q.relevant)
        assert not any(n in q.text for n in TRAIN_NOUNS[CATEGORIES[own]] if len(n) > 3)
    for q in by_kind["image"]:
        assert q.image_id not in q.relevant and all(label[r] == label[q.image_id] for r in q.relevant)
    titles = {p.id: p.title for p in test.products}
    for q in by_kind["brand_sku"]:
        assert q.relevant and all(any(tok in titles[r] for tok in q.text.split() if tok != "sku") for r in q.relevant)


def test_seeded():
    a, b, c = _splits(0)["test"], _splits(0)["test"], _splits(1)["test"]
    assert [p.title for p in a.products] == [p.title for p in b.products]
    assert [q.text for q in a.queries] == [q.text for q in b.queries]
    assert [p.title for p in a.products] != [p.title for p in c.products]
