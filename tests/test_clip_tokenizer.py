"""The torch-free CLIP tokenizer reproduces open_clip's SimpleTokenizer id for id."""
from __future__ import annotations

import numpy as np
import pytest

from export.torch_compat import import_open_clip
from preprocessing.clip_tokenizer import ClipTokenizer, TextInputError, build_clip_bpe_tokenizer

open_clip = import_open_clip()

CORPUS = [
    "a photo of a cat",
    "Red LEATHER ankle boots under 80€!!",
    "it's what's  \n new &amp; cool &lt;3",
    "emoji 👠👗🧥 test",
    "日本語のテキスト と 한국어",
    "don't you'll we've I'm they'd she's",
    "<start_of_text> hello <end_of_text>",
    "naïve café résumé Ünïcödé ßtraße",
    "1234567 3.14 $99.99 50% off",
    "a,b.c;d:e!f?g (h) [i] {j} \"k\" 'l'",
    "Men’s slim-fit jeans – dark wash",
    "x" * 300,
    "word " * 100,
]


@pytest.fixture(scope="module")
def tokenizers_pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    bpe = open_clip.tokenizer.default_bpe()
    build_clip_bpe_tokenizer(bpe).save(str(path))
    return ClipTokenizer(path, context_length=77), open_clip.get_tokenizer("ViT-B-32")


def test_ids_equal_open_clip_on_corpus(tokenizers_pair):
    ours, theirs = tokenizers_pair
    np.testing.assert_array_equal(ours(CORPUS), theirs(CORPUS).numpy())


def test_ids_equal_open_clip_on_random_unicode(tokenizers_pair):
    ours, theirs = tokenizers_pair
    rng = np.random.default_rng(1)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,!?'-&é€ßж中😀\t\n")
    texts = ["".join(rng.choice(alphabet, size=rng.integers(1, 120))) for _ in range(200)]
    texts = [t for t in texts if t.strip()]
    np.testing.assert_array_equal(ours(texts), theirs(texts).numpy())


def test_long_text_is_truncated_with_eot_last(tokenizers_pair):
    ours, _ = tokenizers_pair
    ids = ours(["word " * 100])[0]
    assert ids.shape == (77,) and ids[0] == ours.sot_token_id and ids[-1] == ours.eot_token_id


def test_decode_round_trip(tokenizers_pair):
    ours, _ = tokenizers_pair
    assert ours.decode(ours(["Red leather boots!"])[0]) == "red leather boots !"


@pytest.mark.parametrize("bad, message", [("", "empty"), ("   \n\t ", "empty"), (None, "must be a string"), ("x" * 10_001, "limit")])
def test_bad_text_is_refused(tokenizers_pair, bad, message):
    ours, _ = tokenizers_pair
    with pytest.raises(TextInputError, match=message):
        ours([bad])
