"""Contrastive (CLIP InfoNCE) fine-tuning of an open_clip model on image-text pairs.

Images are rendered once with the serving preprocessing (preprocessing.image.resize_and_crop at the
model's size) and kept as uint8; each step applies light augmentation (shift, flip) and the model's
normalization. Texts are sampled from each item's candidates every step, and a batch encodes each
distinct text once (exact same gradients, far less text-tower work when texts repeat).

Loss: open_clip's ClipLoss when items have no labels. With labels (Fashion-MNIST has only 10
classes, so a batch holds many items of one class), the InfoNCE target of an image is spread over
every text of its class (and vice versa): plain InfoNCE would push apart an image and a correct
text of another item of the same class, which is label noise, not signal.

Checkpoints every epoch (model, optimizer, scheduler, epoch, step, history) and `--resume`; the final
weights are an open_clip checkpoint ({"state_dict": ...}) that `python -m export --clip-arch ARCH
--clip-pretrained PATH` exports unchanged.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from export.clip import MODEL_CONFIG_DIR, load_clip
from export.torch_compat import import_open_clip
from preprocessing.image import ImageSpec, resize_and_crop
from quality.datasets import PairSet
from quality.metrics import summarize

# The serving archs (mm-fmnist-clip) live with export's configs so `python -m export` knows them;
# test-only archs live here.
CONFIG_DIRS = [Path(__file__).parent / "model_configs", MODEL_CONFIG_DIR]
CHECKPOINT = "checkpoint.pt"
FINAL = "final.pt"


@dataclass
class FinetuneConfig:
    arch: str = "mm-fmnist-clip"
    pretrained: str | None = None
    out: Path = Path("runs/finetune")
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    loss: str = "auto"  # auto | clip | label
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    max_minutes: float | None = None  # stop (and save) when this much wall time has gone
    augment: bool = True
    texts_per_class: int | None = 8
    threads: int | None = None
    progress: bool = True
    val_ks: tuple[int, ...] = (1, 5, 10)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


@dataclass
class Rendered:
    """Images at the model's size (uint8 N x 3 x H x W) with their texts and labels."""

    pixels: torch.Tensor
    texts: list[list[str]]
    labels: torch.Tensor | None


def create_model(arch: str, pretrained: str | None, device: torch.device):
    """open_clip model, its serving ImageSpec and tokenizer, built by export's loader (one place builds CLIP);
    the test-only configs of quality/model_configs are registered first."""
    import_open_clip().add_model_config(CONFIG_DIRS[0])
    model, spec, tokenizer = load_clip(arch, pretrained)
    return model.to(device), spec, tokenizer


def render(pairs: PairSet, spec: ImageSpec, progress: bool = False) -> Rendered:
    """Serving-path resize/crop once per image; normalization happens per batch in torch."""
    out = np.empty((len(pairs), 3, *spec.size), dtype=np.uint8)
    for i in tqdm(range(len(pairs)), desc="render", disable=not progress, mininterval=2):
        out[i] = np.asarray(resize_and_crop(pairs.pil(i), spec).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    labels = None if pairs.labels is None else torch.as_tensor(pairs.labels)
    return Rendered(torch.from_numpy(out), pairs.texts, labels)


def normalize_pixels(pixels: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light, label-preserving: random shift up to 1/16 of the side (edge padding) and horizontal flip."""
    n, c, h, w = pixels.shape
    pad = max(1, h // 16)
    padded = F.pad(pixels.float(), (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator) + torch.arange(h).view(1, h)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator) + torch.arange(w).view(1, w)
    shifted = padded.gather(2, dy.view(n, 1, h, 1).expand(n, c, h, padded.shape[3]))
    shifted = shifted.gather(3, dx.view(n, 1, 1, w).expand(n, c, h, w))
    flip = torch.rand(n, generator=generator) < 0.5
    shifted[flip] = shifted[flip].flip(-1)
    return shifted


def encode_texts_unique(model, tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """Normalized text features for `texts`, encoding each distinct string once."""
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    features = F.normalize(model.encode_text(tokenizer(unique).to(device)), dim=-1)
    return features[torch.tensor([index[t] for t in texts], device=device)]


def sample_texts(data: Rendered, index: torch.Tensor, rng: random.Random, per_class: int | None) -> list[str]:
    """One candidate text per item; with labels, a batch draws at most `per_class` distinct texts per class
    (cheaper text tower, and still a fresh template mix every step)."""
    if data.labels is None or not per_class:
        return [rng.choice(data.texts[int(i)]) for i in index]
    chosen: dict[int, list[str]] = {}
    out = []
    for i in index.tolist():
        label = int(data.labels[i])
        if label not in chosen:
            candidates = data.texts[i]
            chosen[label] = rng.sample(candidates, min(per_class, len(candidates)))
        out.append(rng.choice(chosen[label]))
    return out


def label_aware_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE whose target mass is spread over every same-label pair in the batch."""
    logits = scale * image @ text.T
    same = (labels.view(-1, 1) == labels.view(1, -1)).float()
    target = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, dim=1), dim=1).mean())


class Schedule:
    """Linear warm-up, then cosine decay to 0. Progress is the larger of step progress and, under a wall-time
    budget, time progress: on a shared CPU the run still anneals fully before its time is up."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total, self.time_progress = warmup, total, 0.0

    def progress(self, step: int) -> float:
        return min(1.0, max((step - self.warmup) / max(1, self.total - self.warmup), self.time_progress))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / max(1, self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))


@torch.no_grad()
def embed(model, tokenizer, data: Rendered, spec: ImageSpec, device: torch.device, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Normalized image features and features of each item's first text."""
    model.eval()
    images, texts = [], []
    for start in range(0, len(data.texts), batch):
        pixels = normalize_pixels(data.pixels[start:start + batch].to(device), spec)
        images.append(F.normalize(model.encode_image(pixels), dim=-1).float().cpu())
        texts.append(encode_texts_unique(model, tokenizer, [t[0] for t in data.texts[start:start + batch]], device).float().cpu())
    return torch.cat(images).numpy(), torch.cat(texts).numpy()


def validate(model, tokenizer, data: Rendered, spec: ImageSpec, device: torch.device, ks=(1, 5, 10)) -> dict[str, float]:
    """recall@K text->image and image->text on held-out pairs; with labels a same-label item counts."""
    image, text = embed(model, tokenizer, data, spec, device)
    n = len(image)
    labels = data.labels.numpy() if data.labels is not None else np.arange(n)
    top = np.argsort(-(text @ image.T), axis=1)[:, : max(ks)]
    groups = {label: set(np.flatnonzero(labels == label)) for label in np.unique(labels)}
    t2i = summarize([list(r) for r in top], [groups[labels[i]] for i in range(n)], ks)
    top_i2t = np.argsort(-(image @ text.T), axis=1)[:, : max(ks)]
    i2t = summarize([list(r) for r in top_i2t], [groups[labels[i]] for i in range(n)], ks)
    out = {f"t2i_hit@{k}": t2i[f"hit@{k}"] for k in ks} | {f"i2t_hit@{k}": i2t[f"hit@{k}"] for k in ks}
    out[f"t2i_precision@{max(ks)}"] = t2i[f"precision@{max(ks)}"]
    out["chance@1"] = float(np.mean([len(groups[labels[i]]) / n for i in range(n)]))
    return out


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def finetune(train: PairSet, val: PairSet, cfg: FinetuneConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train; returns {'history': [...], 'final': path, 'seconds': ...}. Resumes from cfg.out/checkpoint.pt."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    open_clip = import_open_clip()
    model, spec, tokenizer = create_model(cfg.arch, cfg.pretrained, device)
    log(f"[finetune] {cfg.arch} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) on {device}, image {spec.size}")
    train_data, val_data = render(train, spec, cfg.progress), render(val, spec, cfg.progress)
    use_labels = train_data.labels is not None if cfg.loss == "auto" else cfg.loss == "label"
    clip_loss = open_clip.ClipLoss()

    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = Schedule(cfg.warmup_steps, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60 - 20  # keep 20 s to validate and save
    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    epoch, step, history = 0, 0, []
    checkpoint_path = out / CHECKPOINT
    if cfg.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler", {})) if state.get("scaler") else None
        epoch, step, history = state["epoch"], state["step"], state["history"]
        log(f"[finetune] resumed from {checkpoint_path} at epoch {epoch}, step {step}")

    generator = torch.Generator().manual_seed(cfg.seed + epoch)
    text_rng = random.Random(cfg.seed + epoch)
    out_of_time = False
    train_started = time.perf_counter()
    while epoch < cfg.epochs and not out_of_time:
        model.train()
        order = torch.randperm(len(train), generator=generator)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, mininterval=1)
        losses = []
        for b in bar:
            index = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            pixels = train_data.pixels[index]
            if cfg.augment:
                pixels = augment(pixels, generator)
            pixels = normalize_pixels(pixels.to(device), spec)
            texts = sample_texts(train_data, index, text_rng, cfg.texts_per_class)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                image_features = F.normalize(model.encode_image(pixels), dim=-1)
                text_features = encode_texts_unique(model, tokenizer, texts, device)
                scale = model.logit_scale.exp()
                if use_labels:
                    loss = label_aware_loss(image_features.float(), text_features.float(), scale.float(), train_data.labels[index].to(device))
                else:
                    loss = clip_loss(image_features, text_features, scale)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            if budget is not None:
                schedule.time_progress = (time.perf_counter() - train_started) / max(1.0, budget - (train_started - started))
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            if budget is not None and schedule.time_progress >= 1.0:
                out_of_time = True
                break
        bar.close()
        epoch += 1
        metrics = validate(model, tokenizer, val_data, spec, device, cfg.val_ks)
        record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
                  "last_loss": float(np.mean(losses[-20:])) if losses else None,
                  "seconds": round(time.perf_counter() - started, 1), **metrics}
        history.append(record)
        log("[finetune] " + json.dumps(record))
        torch.save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "history": history,
                    "config": cfg.to_json()}, checkpoint_path)
    final = out / FINAL
    torch.save({"state_dict": {k: v.detach().cpu().float() for k, v in model.state_dict().items()}}, final)
    summary = {"arch": cfg.arch, "final": str(final), "history": history, "seconds": round(time.perf_counter() - started, 1),
               "stopped_early": out_of_time, "config": cfg.to_json(), "train_items": len(train), "val_items": len(val)}
    (out / "history.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
