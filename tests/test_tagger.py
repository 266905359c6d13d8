"""The interrogator's decision rule: in-facet probability floor, no colour on grayscale photos."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from gateway.tagger import VOCABULARY, Tagger
from preprocessing.image import decode_image, is_grayscale


def tagger(floor: float = 0.5) -> Tagger:
    # facet 0 = colour (terms 0, 1), facet 1 = category (terms 2, 3); 4-d unit term vectors
    vectors = np.eye(4, dtype=np.float32)
    return Tagger(["colour", "category"], ["red", "blue", "boot", "bag"], np.array([0, 0, 1, 1]), vectors,
                  min_probability=[floor, floor], needs_colour=[True, False], temperature=100.0)


def test_a_clear_winner_is_tagged_and_a_tie_is_not():
    clear = np.array([[0.30, 0.20, 0.25, 0.25]], np.float32)  # red wins its facet by 0.1 cosine (p ~ 1); boot/bag tie (p = 0.5)
    tags = tagger(floor=0.6).tags(clear)[0]
    assert [(t.term, t.facet) for t in tags] == [("red", "colour")]
    assert tagger(floor=0.5).tags(clear)[0][1].facet == "category"  # p = 0.5 reaches a 0.5 floor


def test_probability_uses_the_temperature():
    close = np.array([[0.30, 0.29, 0.0, 0.0]], np.float32)  # 0.01 cosine apart: p(red) = 1 / (1 + e^-1) = 0.73
    assert [t.term for t in tagger(floor=0.7).tags(close)[0] if t.facet == "colour"] == ["red"]
    assert [t.term for t in tagger(floor=0.75).tags(close)[0] if t.facet == "colour"] == []


def test_no_colour_tags_for_grayscale_photos():
    image = np.array([[0.9, 0.0, 0.9, 0.0]], np.float32)
    assert {t.facet for t in tagger().tags(image, grayscale=[True])[0]} == {"category"}
    assert {t.facet for t in tagger().tags(image, grayscale=[False])[0]} == {"colour", "category"}


def test_vocabulary_marks_colour_and_floors():
    data = json.loads(VOCABULARY.read_text())
    assert data["facets"]["colour"]["needs_colour"] is True
    assert all(0 < spec["min_probability"] <= 1 for spec in data["facets"].values())


@pytest.mark.parametrize("mode, grey", [("L", True), ("RGB-grey", True), ("RGB", False)])
def test_is_grayscale(mode, grey):
    rng = np.random.default_rng(0)
    if mode == "L":
        picture = Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L")
    elif mode == "RGB-grey":
        plane = rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)
        picture = Image.fromarray(np.repeat(plane, 3, axis=2), "RGB")
    else:
        picture = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if mode != "RGB" else "PNG")
    assert is_grayscale(decode_image(buffer.getvalue())) is grey
