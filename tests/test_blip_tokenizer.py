"""BlipTokenizer (tokenizers only) against transformers' BERT tokenizer built from the same files."""
from __future__ import annotations

import numpy as np
import pytest

from export.blip import build_tiny_tokenizer, write_tokenizer
from preprocessing.blip_tokenizer import BlipTokenizer
from preprocessing.clip_tokenizer import TextInputError

PROMPTS = ["a picture of", "", "A Photo of the RED dress,", "hello", "  striped   cotton t-shirt  "]
TEXTS = [
    "red leather ankle boots",
    "Men's running shoes, breathable mesh, size 44 — 79.99€",
    "it's a cozy wool sweater & it's on sale!",
    "striped cotton t-shirt " * 20,
    "Café crème, naïve façade",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def entry(hf_tokenizer, tmp_path_factory):
    repository = tmp_path_factory.mktemp("blip_tok")
    return repository, write_tokenizer(hf_tokenizer, repository)


@pytest.fixture(scope="module")
def ours(entry):
    repository, row = entry
    return BlipTokenizer.from_manifest_entry(repository, row)


def test_manifest_entry_names_blip_special_ids(entry, hf_tokenizer):
    repository, row = entry
    assert (repository / row["file"]).is_file() and row["file"] == "tokenizers/blip/tokenizer.json"
    assert row["bos_token_id"] == hf_tokenizer.convert_tokens_to_ids("[DEC]")
    assert row["enc_token_id"] == hf_tokenizer.convert_tokens_to_ids("[ENC]")
    assert row["eos_token_id"] == row["sep_token_id"] == hf_tokenizer.sep_token_id  # BLIP stops at [SEP]
    assert row["pad_token_id"] == hf_tokenizer.pad_token_id and row["vocab_size"] == len(hf_tokenizer)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_encode_prompt_is_what_generate_feeds_the_decoder(ours, hf_tokenizer, prompt):
    ids = np.asarray(hf_tokenizer([prompt])["input_ids"])
    ids[:, 0] = hf_tokenizer.bos_token_id  # BlipForConditionalGeneration.generate: BOS for [CLS] ...
    got_ids, got_mask = ours.encode_prompt([prompt])
    assert got_ids.tolist() == ids[:, :-1].tolist()  # ... and the trailing [SEP] dropped
    assert got_mask.tolist() == [[1] * got_ids.shape[1]]
    assert got_ids.dtype == np.int64


def test_encode_prompt_batch_pads_like_the_processor(ours, hf_tokenizer):
    batch = hf_tokenizer(PROMPTS, padding=True, return_tensors="np")
    ids, mask = batch["input_ids"].copy(), batch["attention_mask"]
    ids[:, 0] = hf_tokenizer.bos_token_id
    got_ids, got_mask = ours.encode_prompt(PROMPTS)
    assert got_ids.tolist() == ids[:, :-1].tolist() and got_mask.tolist() == mask[:, :-1].tolist()


@pytest.mark.parametrize("max_length", [8, 35])
def test_encode_for_itm_matches_the_processor(ours, hf_tokenizer, max_length):
    expected = hf_tokenizer(TEXTS, padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    ids, mask = ours.encode_for_itm(TEXTS, max_length)
    assert ids.tolist() == expected["input_ids"].tolist()
    assert mask.tolist() == expected["attention_mask"].tolist()


def test_decode_equals_hf_decode_skip_special_tokens(ours, hf_tokenizer):
    rng = np.random.default_rng(0)
    rows = [hf_tokenizer(text)["input_ids"] for text in TEXTS]
    rows += [[hf_tokenizer.bos_token_id, *row[1:-1], hf_tokenizer.sep_token_id, 0, 0] for row in rows[:2]]
    rows += [rng.integers(0, len(hf_tokenizer), size=25).tolist() for _ in range(20)]  # subwords, punctuation, specials
    for row in rows:
        assert ours.decode(row) == hf_tokenizer.decode(row, skip_special_tokens=True), row
    assert ours.decode_batch(rows[:2]) == hf_tokenizer.batch_decode(rows[:2], skip_special_tokens=True)


def test_decode_with_clean_up_tokenization_spaces(entry, hf_tokenizer):
    repository, row = entry
    ours = BlipTokenizer.from_manifest_entry(repository, {**row, "clean_up_tokenization_spaces": True})
    for text in ["it 's a cat , is n't it ?", "men 's shoes ! 're 've 'm"]:
        ids = hf_tokenizer(text)["input_ids"]
        assert ours.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def test_bad_texts_are_refused(ours):
    with pytest.raises(TextInputError):
        ours.encode_for_itm(["   "])
    with pytest.raises(TextInputError):
        ours.encode_prompt([None])  # type: ignore[list-item]
    with pytest.raises(TextInputError):
        ours.encode_for_itm(["x" * 20_000])
