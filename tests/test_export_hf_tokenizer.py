"""open_clip models with a Hugging Face tokenizer (SigLIP-style, xlm-roberta-style) export with parity.

Offline: each test builds a tiny tokenizer with the `tokenizers` library (a SigLIP/T5-like one that
appends `</s>`, and an xlm-roberta-like one with `<s> ... </s>` and pad id 1), a tiny open_clip config
that uses it (SigLIP: open_clip's text transformer, canonicalize cleaning, last-token pooling;
xlm-roberta: a transformers XLMRobertaModel tower from a local config, mean pooling), exports it, and
checks the exported tokenizer's ids against open_clip's and the ONNX embeddings against PyTorch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.torch_compat import import_open_clip

open_clip = import_open_clip()

CORPUS = [
    "red leather ankle boots",
    "Robe d'été à fleurs, taille M — 39,99 €",
    "sac à main en cuir 皮革手袋",
    "snake_case_words and <b>HTML</b> &amp; entities!!",
    "  spaces   everywhere \n\t ",
    "striped cotton t-shirt " * 30,  # past the context: truncated with the special tokens kept
    "!!!?",  # empty after canonicalize (SigLIP) / punctuation only (xlm-roberta)
]
TRAIN = ["red blue black navy leather cotton wool linen boots dress bag scarf shoes shirt", "sac à main cuir robe été fleurs taille",
         "皮革手袋 striped t-shirt spaces everywhere html entities snake case words"] * 20


def _train_tokenizer(specials: list[str], template: str, directory: Path, **names: str):
    """A small unigram tokenizer like SentencePiece ones (metaspace), saved as a transformers tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(TRAIN, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token=names["unk_token"]))
    used = sorted({token for token in template.split() if token in specials})
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in used])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)
    fast.save_pretrained(str(directory))
    return fast


def _siglip_style(root: Path) -> tuple[str, dict]:
    directory = root / "siglip_tok"
    fast = _train_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", directory, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    vision = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}
    text = {"context_length": 16, "vocab_size": len(fast), "hf_tokenizer_name": str(directory), "tokenizer_kwargs": {"clean": "canonicalize"},
            "width": 32, "heads": 2, "layers": 2, "no_causal_mask": True, "proj_bias": True, "pool_type": "last",
            "norm_kwargs": {"eps": 1e-6}}
    return "test-siglip-tiny", {"embed_dim": 32, "init_logit_bias": -10, "custom_text": True, "vision_cfg": vision, "text_cfg": text}


def _xlmr_style(root: Path) -> tuple[str, dict]:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory = root / "xlmr"
    fast = _train_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>", directory, bos_token="<s>", cls_token="<s>",
                            pad_token="<pad>", eos_token="</s>", sep_token="</s>", unk_token="<unk>")
    config = XLMRobertaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              max_position_embeddings=64, pad_token_id=fast.pad_token_id, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(1)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(str(directory))  # open_clip loads the tower's weights from here
    vision = {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16}
    text = {"hf_model_name": str(directory), "hf_tokenizer_name": str(directory), "hf_pooler_type": "mean_pooler",
            "context_length": 20}
    return "test-xlmr-tiny", {"embed_dim": 32, "vision_cfg": vision, "text_cfg": text}


@pytest.fixture(scope="module", params=["siglip", "xlmr"])
def hf_export(request, tmp_path_factory):
    from export.cli import run_export

    root = tmp_path_factory.mktemp(f"hf_{request.param}")
    name, config = (_siglip_style if request.param == "siglip" else _xlmr_style)(root)
    (root / "configs").mkdir()
    (root / "configs" / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(root / "configs")
    manifest = run_export({"preset": "test", "clip": {"arch": name, "pretrained": None}, "blip": None}, root / "repo", 17, [],
                          log=lambda _m: None)
    return request.param, name, root / "repo", manifest


def test_tokenizer_travels_as_tokenizer_json_and_ids_equal_open_clip(hf_export):
    from preprocessing.clip_tokenizer import TextInputError
    from preprocessing.text import load_text_tokenizer

    style, name, repo, manifest = hf_export
    entry = manifest["clip"]["tokenizer"]
    assert entry["kind"] == "hf" and entry["parity_with_open_clip"] and (repo / entry["file"]).is_file()
    assert entry["clean"] == ("canonicalize" if style == "siglip" else "whitespace")
    ours = load_text_tokenizer(repo, entry)
    reference = open_clip.get_tokenizer(name)
    for text in CORPUS:
        if style == "siglip" and text == "!!!?":
            with pytest.raises(TextInputError, match="empty"):
                ours([text])
            continue
        assert np.array_equal(ours([text]), reference([text]).numpy()), text
    kept = [t for t in CORPUS if t != "!!!?"]
    ids = ours(kept)
    assert ids.shape == (len(kept), entry["context_length"])
    eos = ours.tokenizer.token_to_id("</s>")
    assert ids[kept.index(CORPUS[5]), -1] == eos  # truncated rows keep the closing special token
    if style == "xlmr":
        assert ids[0, 0] == ours.tokenizer.token_to_id("<s>") and entry["pad_token_id"] == 1


def test_embeddings_equal_pytorch(hf_export):
    from export.clip import load_clip
    from runtime.clip import ClipEncoder
    from runtime.manifest import Manifest

    style, name, repo, manifest = hf_export
    parity = manifest["models"]["clip_text"]["parity"]["text_embeds"]
    assert parity["max_abs_diff"] <= 1e-5
    torch.manual_seed(0)  # the export's seed: the same random weights
    model, _, reference = load_clip(name, None)
    texts = [t for t in CORPUS if t != "!!!?"]
    with torch.no_grad():
        expected = F.normalize(model.encode_text(reference(texts)), dim=-1).numpy()
    got = ClipEncoder(Manifest.load(repo)).embed_texts(texts)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("preset", ["siglip", "fashion-siglip", "multilingual"])
def test_presets_name_hf_tokenizer_models_open_clip_knows(preset):
    from export.presets import load_preset

    clip = load_preset(preset)["clip"]
    if clip["arch"].startswith("hf-hub:"):
        assert clip["pretrained"] is None  # the hub repository carries config, weights and tokenizer
        return
    config = open_clip.get_model_config(clip["arch"])
    assert "hf_tokenizer_name" in config["text_cfg"]
    assert clip["pretrained"] in open_clip.list_pretrained_tags_by_model(clip["arch"])


@pytest.mark.slow
def test_triton_tokenize_text_runs_the_same_hf_tokenizer(hf_export, tmp_path):
    """The CPU rendering of the export on a real tritonserver: embed_text equals the in-process encoder."""
    pytest.importorskip("pytriton")
    import tritonclient.grpc as grpcclient

    from runtime import triton_contract as contract
    from runtime.clip import ClipEncoder
    from runtime.manifest import Manifest
    from triton_runner import TritonServer
    from triton_runner.client import text_input
    from triton_runner.render import render_cpu

    style, _, repo, _ = hf_export
    if style != "xlmr":
        pytest.skip("one server for the HF path: the xlm-roberta-style export (pad id 1, <s> ... </s>)")
    render_cpu(repo, tmp_path / "cpu")
    texts = [t for t in CORPUS if t.strip()]
    with TritonServer(tmp_path / "cpu", workdir=tmp_path, startup_timeout=120) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        got = client.infer(contract.EMBED_TEXT, [text_input(texts)]).as_numpy(contract.EMBEDDING)
    assert np.abs(got - ClipEncoder(Manifest.load(repo)).embed_texts(texts)).max() <= 1e-5
