"""The export manifest: what a model repository holds and how to feed it.

`manifest.json` sits at the root of a model repository. It is the one place that says where each
graph lives, its tensor names and dims, the preprocessing constants, the tokenizer files, file
checksums and the parity measured at export. Everything that runs the graphs reads it.

Layout (Triton's, so the same directory serves Triton and ONNX Runtime in-process):
    <repo>/manifest.json
    <repo>/<model_name>/1/model.onnx            fp32 graph
    <repo>/<model_name>/1/model.int8.onnx       optional dynamic-int8 variant (CPU)
    <repo>/<model_name>/1/model.qdq.onnx        optional static-int8 QDQ variant, calibrated (CPU)
    <repo>/<model_name>/1/model.fp16.onnx       optional fp16 variant (GPU)
    <repo>/tokenizers/<family>/tokenizer.json
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from preprocessing.image import ImageSpec

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
MODEL_VERSION = "1"

# Model names are Triton model names too (model_repository/<name>/config.pbtxt).
CLIP_IMAGE = "clip_image"
CLIP_TEXT = "clip_text"
BLIP_VISION = "blip_vision"
BLIP_DECODER_INIT = "blip_decoder_init"
BLIP_DECODER_STEP = "blip_decoder_step"
BLIP_ITM = "blip_itm"

VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8_static": "model.qdq.onnx", "fp16": "model.fp16.onnx"}


class ManifestError(RuntimeError):
    """The repository is missing, incomplete or does not match its manifest."""


def model_file(model_name: str, variant: str = "fp32") -> str:
    """Repository-relative path of one graph."""
    return f"{model_name}/{MODEL_VERSION}/{VARIANT_FILES[variant]}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """Read access to a repository's manifest.json (a plain dict underneath, see export for writing)."""

    def __init__(self, repository: str | Path, data: dict[str, Any]) -> None:
        self.repository = Path(repository)
        self.data = data

    @classmethod
    def load(cls, repository: str | Path) -> "Manifest":
        repository = Path(repository)
        path = repository / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(
                f"no {MANIFEST_FILE} in {repository}: run `python -m export --preset tiny --out {repository}` first"
            )
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"{path}: format_version {data.get('format_version')} is not {FORMAT_VERSION}")
        return cls(repository, data)

    # -- models -----------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.data["models"]

    def has_model(self, name: str) -> bool:
        return name in self.models

    def model(self, name: str) -> dict[str, Any]:
        try:
            return self.models[name]
        except KeyError:
            raise ManifestError(f"model {name!r} is not in {self.repository / MANIFEST_FILE}") from None

    def graph_path(self, name: str, variant: str = "fp32") -> Path:
        entry = self.model(name)
        if variant not in VARIANT_FILES:
            raise ManifestError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANT_FILES)}")
        if variant != "fp32":
            variants = entry.get("variants", {})
            if variant not in variants:
                raise ManifestError(f"model {name!r} has no {variant} variant; export it with --{variant}")
            entry = variants[variant]
        return self.repository / entry["file"]

    def verify_checksums(self) -> None:
        """Refuse to serve files that changed after export."""
        for name, entry in self.models.items():
            for item in [entry, *entry.get("variants", {}).values()]:
                path = self.repository / item["file"]
                if not path.is_file():
                    raise ManifestError(f"{path} is listed in the manifest but missing")
                if sha256_file(path) != item["sha256"]:
                    raise ManifestError(f"{path} does not match its sha256 in the manifest")

    # -- model families ------------------------------------------------------------------------
    @property
    def clip(self) -> dict[str, Any]:
        return self.data["clip"]

    @property
    def blip(self) -> dict[str, Any] | None:
        return self.data.get("blip")

    def image_spec(self, family: str) -> ImageSpec:
        return ImageSpec.from_dict(self.data[family]["image"])

    @property
    def embed_dim(self) -> int:
        return int(self.clip["embed_dim"])
