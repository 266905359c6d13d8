"""The leak-free harness end to end on the shipped Fashion-MNIST subset: a small CLIP fine-tuned here (train
frames and nouns only), exported, evaluated by the independent reference and through a real gateway
(local ONNX Runtime backend, Milvus Lite, FLAT index). Floors are real: chance P@10 is 0.10."""
from __future__ import annotations

import json

import numpy as np
import pytest

import quality.reference
import quality.tuning
from quality.datasets import fashion_mnist_arrays, load_fashion_mnist
from quality.evalset import SplitSizes

SIZES = SplitSizes(validation=200, test=300, image_queries=(30, 40), brand_queries=(15, 20), nouns_per_class=1)
EXACT_MODES = ("image only", "caption/tags only", "fused (default)", "multi_vector, tuned request weights")  # reference twins
KEYWORD_MODES = ("gateway BM25 channel: keyword only", "gateway BM25 channel: hybrid weighted", "gateway BM25 channel: hybrid RRF")
MODES = EXACT_MODES + KEYWORD_MODES


@pytest.fixture(scope="module")
def trained_repository(tmp_path_factory):
    """mm-test-clip fine-tuned for 3 epochs on 2,250 subset photos (seconds), exported CLIP-only."""
    from export.cli import main
    from export.torch_compat import import_open_clip
    from quality.finetune import CONFIG_DIRS, FinetuneConfig, finetune

    work = tmp_path_factory.mktemp("quality")
    train, val = load_fashion_mnist("train", subset=True).split(0.1, 0)
    cfg = FinetuneConfig(arch="mm-test-clip", out=work / "ft", epochs=3, batch_size=64, lr=2e-3, warmup_steps=5,
                         progress=False, threads=2, device="cpu")
    result = finetune(train, val, cfg, log=lambda _m: None)
    import_open_clip().add_model_config(CONFIG_DIRS[0])  # export learns the test arch in this process
    repo = work / "repo"
    assert main(["--preset", "tiny", "--clip-arch", "mm-test-clip", "--clip-pretrained", result["final"], "--no-blip",
                 "--out", str(repo), "--quiet"]) == 0
    return repo


@pytest.fixture(scope="module")
def gateway_address(trained_repository, tmp_path_factory):
    """One real gateway (local backend, Milvus Lite, FLAT: exact) for the module's runs."""
    from quality.system import start_gateway

    gateway = start_gateway(trained_repository, tmp_path_factory.mktemp("gateway"), ["--index-type", "FLAT"], lambda _m: None)
    yield gateway.address
    gateway.stop()


def _cfg(repo, tmp_path, address=None):
    from quality.eval import EvalConfig

    return EvalConfig(repository=repo, out=tmp_path / "out", workdir=tmp_path / "work", sizes=SIZES, gateway=address is not None,
                      address=address, source=fashion_mnist_arrays("test", subset=True), bootstrap=300, step=0.25,
                      gateway_modes=MODES)


def check_quality(report) -> None:
    """Floors on the leak-free test split (reference)."""
    ref = report["reference"]
    shipped = next(n for n in ref if n.startswith("SHIPPED"))
    assert ref["image only"]["text->image"]["P@10"]["mean"] >= 0.30, ref["image only"]["text->image"]
    assert ref["image only"]["image->image"]["P@10"]["mean"] >= 0.30, ref["image only"]["image->image"]
    for task in ("text->image", "image->image"):
        best = max(ref[n][task]["P@10"]["mean"] for n in ("image only", "title only", "caption/tags only"))
        assert ref[shipped][task]["P@10"]["high"] >= best, (task, ref[shipped][task], best)
        fixed = ref["fused, gateway default weights"][task]["P@10"]["mean"]
        assert fixed >= 0.25 and fixed > ref["title only"][task]["P@10"]["mean"], (task, fixed)
    assert ref["BM25 title+description"]["brand/SKU"]["R@10"]["mean"] >= 0.8  # SKUs are keyword-findable
    assert ref["BM25 title+description"]["text->image"]["P@10"]["mean"] <= 0.2  # titles do not leak the class


def check_agreement(report) -> None:
    """The gateway's rankings equal the independent reference's: P@10 within 0.02 on 300 products (a 16-pixel
    model: a tag at its facet's probability floor can flip between ONNX and PyTorch)."""
    for mode in EXACT_MODES:
        for task, row in report["gateway"]["modes"][mode].items():
            assert row["abs_diff_P@10"] <= 0.02, (mode, task, row)


def flips_a_sign(s, weights):
    """A broken fusion: the image cosine subtracted instead of added."""
    return quality.reference.fused(quality.reference.Scores({**s.channel, "image": -s.channel["image"]}, s.present, s.exclude), weights)


def ignores_a_weight(s, weights):
    """A broken fusion: the title weight treated as 1 whatever was asked."""
    return quality.reference.fused(s, {**weights, "title": 1.0})


def test_reference_floors_and_a_flipped_sign_fails(trained_repository, tmp_path, monkeypatch):
    from quality.eval import run_eval

    report = run_eval(_cfg(trained_repository, tmp_path), log=lambda _m: None)
    assert report["splits"]["test"]["queries"]["text"] >= 150
    check_quality(report)
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["chosen"]["raw"]["image"] and (tmp_path / "out" / "eval.png").stat().st_size > 10_000

    monkeypatch.setattr(quality.tuning, "fused", flips_a_sign)
    with pytest.raises(AssertionError):
        check_quality(run_eval(_cfg(trained_repository, tmp_path / "broken"), log=lambda _m: None))


def test_gateway_agrees_with_the_reference_and_an_ignored_weight_fails(trained_repository, gateway_address, tmp_path, monkeypatch):
    from quality.eval import run_eval

    report = run_eval(_cfg(trained_repository, tmp_path, gateway_address), log=lambda _m: None)
    gateway = report["gateway"]
    assert gateway["tag_lists_equal_to_reference"] >= 0.9  # the tagger written again in the harness agrees
    assert set(gateway["modes"]) == set(MODES)
    check_agreement(report)
    # the gateway's own keyword channel (Milvus BM25) finds the brand/SKU queries' products; its hybrids are reported
    keyword = gateway["modes"]["gateway BM25 channel: keyword only"]
    assert keyword["brand/SKU"]["gateway"]["R@10"]["mean"] >= 0.8, keyword["brand/SKU"]
    assert keyword["brand/SKU"]["weights_used"]["keyword"] == 1.0
    assert {"text->image", "brand/SKU", "text mix"} <= set(report["targets"]["issue 13 through the gateway: gateway BM25 channel: hybrid RRF"])
    # request weights reached the gateway and were used (multi_vector)
    used = gateway["modes"]["multi_vector, tuned request weights"]["image->image"]["weights_used"]
    chosen = report["chosen"]["raw"]["image"]
    assert np.allclose([used[c] for c in ("image", "title", "caption")], [chosen[c] for c in ("image", "title", "caption")], atol=1e-3)

    monkeypatch.setattr(quality.tuning, "fused", ignores_a_weight)
    with pytest.raises(AssertionError):
        check_agreement(run_eval(_cfg(trained_repository, tmp_path / "broken", gateway_address), log=lambda _m: None))


def test_eval_cli_text_weight_reaches_the_reference_and_the_gateway_requests(monkeypatch, tmp_path):
    """--text-weight sets the composed queries' text share of the run (the reference composes with it and
    search_all sends it as each request's text_weight)."""
    import quality.eval
    from quality.cli import main
    from quality.reference import compose

    seen = {}
    monkeypatch.setattr(quality.eval, "run_eval", lambda cfg, log: seen.setdefault("cfg", cfg) and {"tables": "", "targets": {}})
    main(["eval", "--repository", str(tmp_path), "--no-gateway", "--text-weight", "0.8", "--out", str(tmp_path / "o")])
    assert seen["cfg"].text_weight == 0.8
    image, text = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert compose(image, text, 0.8)[1] > compose(image, text, 0.5)[1]
