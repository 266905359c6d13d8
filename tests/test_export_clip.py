"""`python -m export --preset tiny`: CLIP graphs, manifest, parity, variants, atomic writes, clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.clip import NormalizedImageEncoder, NormalizedTextEncoder, load_clip
from preprocessing.image import preprocess_images
from runtime.clip import ClipEncoder
from runtime.manifest import CLIP_IMAGE, CLIP_TEXT, MANIFEST_FILE, Manifest, ManifestError

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["red leather ankle boots", "a blue summer dress", "wireless headphones", "x" * 400]


def test_manifest_describes_graphs_and_preprocessing(tiny_manifest: Manifest):
    clip = tiny_manifest.clip
    assert clip["embed_dim"] == 64 and clip["normalized"] is True
    assert clip["image"]["size"] == [64, 64] and clip["image"]["interpolation"] == "bicubic"
    assert clip["tokenizer"]["context_length"] == 77 and clip["tokenizer"]["parity_with_open_clip"] is True
    image = tiny_manifest.model(CLIP_IMAGE)
    assert image["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": [-1, 3, 64, 64]}]
    assert image["outputs"] == [{"name": "image_embeds", "dtype": "float32", "shape": [-1, 64]}]
    text = tiny_manifest.model(CLIP_TEXT)
    assert text["inputs"] == [{"name": "input_ids", "dtype": "int64", "shape": [-1, 77]}]
    tiny_manifest.verify_checksums()


@pytest.mark.parametrize("name", [CLIP_IMAGE, CLIP_TEXT])
def test_recorded_parity_meets_targets(tiny_manifest: Manifest, name):
    entry = tiny_manifest.model(name)
    for row in entry["parity"].values():
        assert row["max_abs_diff"] <= 1e-4 and row["min_cosine"] >= 0.9999
    for row in entry["variants"]["int8"]["parity_vs_fp32"].values():
        assert row["min_cosine"] >= 0.99
    for row in entry["variants"]["fp16"]["parity_vs_fp32"].values():
        assert row["min_cosine"] >= 0.999


def test_runtime_embeddings_match_pytorch_on_real_photos(tiny_manifest: Manifest, real_photos):
    """Independent of the export's own check: rebuild the seeded model and compare end to end."""
    torch.manual_seed(0)
    model, spec, reference_tokenizer = load_clip("mm-tiny-clip", None)
    encoder = ClipEncoder(tiny_manifest)
    photos = list(real_photos.values())
    with torch.no_grad():
        expected_images = NormalizedImageEncoder(model)(torch.from_numpy(preprocess_images(photos, spec))).numpy()
        expected_texts = NormalizedTextEncoder(model)(reference_tokenizer(QUERIES)).numpy()
    for batch in (photos[:1], photos):  # dynamic batch axis
        got = encoder.embed_images(batch)
        assert np.max(np.abs(got - expected_images[: len(batch)])) <= 1e-4
    got_texts = encoder.embed_texts(QUERIES)
    assert np.max(np.abs(got_texts - expected_texts)) <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got_texts, axis=1), 1.0, atol=1e-5)


def test_int8_variant_serves_close_embeddings(tiny_manifest: Manifest, real_photos):
    fp32, int8 = ClipEncoder(tiny_manifest), ClipEncoder(tiny_manifest, variant="int8")
    photos = list(real_photos.values())
    cosine_images = np.sum(fp32.embed_images(photos) * int8.embed_images(photos), axis=1)
    cosine_texts = np.sum(fp32.embed_texts(QUERIES) * int8.embed_texts(QUERIES), axis=1)
    assert cosine_images.min() >= 0.99 and cosine_texts.min() >= 0.99


def test_unknown_variant_and_missing_repository_are_clear(tiny_manifest: Manifest, tmp_path):
    with pytest.raises(ManifestError, match="python -m export"):
        Manifest.load(tmp_path)
    with pytest.raises(ManifestError, match="unknown variant 'int4'"):
        tiny_manifest.graph_path(CLIP_IMAGE, "int4")


def _run_export(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "export", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "huge"], "unknown preset 'huge'; choose one of"),
        (["--clip-arch", "ViT-B-33"], "unknown open_clip architecture 'ViT-B-33' (did you mean"),
        (["--clip-arch", "ViT-B-32", "--clip-pretrained", "/no/such/model.safetensors"], "does not exist"),
        (["--clip-arch", "ViT-B-32", "--clip-pretrained", "no_such_tag"], "no pretrained tag 'no_such_tag'"),
        (["--preset", "base", "--no-blip"], "pass --clip-pretrained"),
    ],
)
def test_bad_requests_fail_with_one_clear_line(tmp_path, args, message):
    result = _run_export(*args, "--out", str(tmp_path / "repo"), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("[export]")]
    assert len(lines) == 1 and lines[0].startswith("export failed:") and message in lines[0], result.stderr
    assert not (tmp_path / "repo").exists()
    assert not any(p.name.startswith(".repo.export-") for p in tmp_path.iterdir())


def test_reexport_replaces_artifacts_and_keeps_configs(tmp_path):
    out = tmp_path / "model_repository"
    (out / CLIP_IMAGE).mkdir(parents=True)
    (out / CLIP_IMAGE / "config.pbtxt").write_text('name: "clip_image"\n')
    first = _run_export("--no-blip", "--int8", "--out", str(out), "--quiet")
    assert first.returncode == 0, first.stderr
    assert (out / CLIP_IMAGE / "1" / "model.int8.onnx").is_file()
    assert (out / CLIP_IMAGE / "config.pbtxt").read_text() == 'name: "clip_image"\n'
    manifest_before = (out / MANIFEST_FILE).read_text()

    failed = _run_export("--no-blip", "--clip-arch", "ViT-B-33", "--out", str(out))
    assert failed.returncode == 2 and (out / MANIFEST_FILE).read_text() == manifest_before

    second = _run_export("--no-blip", "--out", str(out), "--quiet")
    assert second.returncode == 0, second.stderr
    assert "exported 2 graphs" in second.stdout
    manifest = Manifest.load(out)
    manifest.verify_checksums()
    assert "variants" not in manifest.model(CLIP_IMAGE)
    assert not (out / CLIP_IMAGE / "1" / "model.int8.onnx").exists()  # stale variant removed
    assert json.loads((out / MANIFEST_FILE).read_text())["blip"] is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
