"""Contrastive fine-tuning on a tiny synthetic set (coloured shapes with matching captions): the loss
falls, recall@1 rises above chance, checkpoints resume, and the final file loads as an open_clip checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from quality.datasets import PairSet
from quality.finetune import FinetuneConfig, augment, finetune, label_aware_loss

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220), "yellow": (230, 220, 30)}


def shapes(n: int, seed: int) -> PairSet:
    """A coloured square or disc at a random place on white; the caption names colour and shape."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    images = np.full((n, 32, 32, 3), 255, np.uint8)
    texts, labels = [], []
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        label = i % len(names)
        colour = names[label]
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(5, 9)
        disc = bool(rng.integers(0, 2))
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if disc else (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        images[i][mask] = COLOURS[colour]
        shape = "disc" if disc else "square"
        texts.append([f"a {colour} {shape}", f"a photo of a {colour} {shape}", f"{colour}"])
        labels.append(label)
    return PairSet(images=images, texts=texts, labels=np.asarray(labels), class_names=names)


def test_label_aware_loss_reduces_to_infonce_with_unique_labels():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * image @ text.T
    target = torch.arange(6)
    infonce = 0.5 * (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target))
    assert torch.allclose(label_aware_loss(image, text, scale, torch.arange(6)), infonce, atol=1e-6)


def test_augment_keeps_shape_and_range():
    pixels = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    out = augment(pixels, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 16, 16) and out.min() >= 0 and out.max() <= 255


def test_finetune_learns_and_resumes(tmp_path):
    train, val = shapes(160, 0), shapes(40, 1)
    cfg = FinetuneConfig(arch="mm-test-clip", out=tmp_path / "run", epochs=3, batch_size=16, lr=3e-3,
                         warmup_steps=5, progress=False, threads=2, device="cpu")
    logs: list[str] = []
    result = finetune(train, val, cfg, log=logs.append)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["last_loss"] < history[0]["train_loss"] - 0.1, history
    chance = history[-1]["chance@1"]
    assert chance == pytest.approx(0.25)
    assert history[-1]["t2i_hit@1"] > chance + 0.2, history
    assert history[-1]["i2t_hit@1"] > chance + 0.2, history

    # resume: one more epoch continues from the saved epoch and step
    more = FinetuneConfig(**{**cfg.__dict__, "epochs": 4, "resume": True})
    resumed = finetune(train, val, more, log=logs.append)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    assert resumed["history"][-1]["step"] == history[-1]["step"] + len(train) // 16
    assert any("resumed" in line for line in logs)
    assert json.loads((tmp_path / "run" / "history.json").read_text())["history"][-1]["epoch"] == 4

    # the final file is an open_clip checkpoint: open_clip loads it by path
    from export.torch_compat import import_open_clip
    from quality.finetune import CONFIG_DIRS

    open_clip = import_open_clip()
    for folder in CONFIG_DIRS:
        open_clip.add_model_config(folder)
    model, _, _ = open_clip.create_model_and_transforms("mm-test-clip", pretrained=str(tmp_path / "run" / "final.pt"))
    saved = torch.load(tmp_path / "run" / "final.pt", weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["logit_scale"], saved["logit_scale"])


def test_plain_clip_loss_without_labels(tmp_path):
    data = shapes(32, 2)
    data.labels = None
    cfg = FinetuneConfig(arch="mm-test-clip", out=tmp_path / "plain", epochs=1, batch_size=16, progress=False, device="cpu")
    result = finetune(data, shapes(8, 3), cfg, log=lambda _m: None)
    assert np.isfinite(result["history"][0]["train_loss"])
