"""`python -m export`: checkpoints -> ONNX graphs + manifest, with parity checks against PyTorch."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from export.errors import ExportError
from export.presets import load_preset, preset_names
from runtime.manifest import FORMAT_VERSION, MANIFEST_FILE

DEFAULT_OUT = Path("model_repository")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Export CLIP (open_clip) image/text encoders and BLIP captioning/ITM (transformers) to ONNX, "
            "check parity against PyTorch, and write graphs + manifest.json into a Triton model repository."
        ),
    )
    parser.add_argument(
        "--preset",
        default="tiny",
        help=f"model preset: {', '.join(preset_names())}, or 'auto' (base where the model hub is reachable, else tiny) (default: tiny)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"model repository to write (default: {DEFAULT_OUT})")
    parser.add_argument("--clip-arch", help="open_clip architecture name, overrides the preset (e.g. ViT-B-16)")
    parser.add_argument(
        "--clip-pretrained",
        help="open_clip pretrained tag (e.g. laion2b_s34b_b79k) or a local checkpoint file; 'none' for random weights",
    )
    parser.add_argument("--blip-checkpoint", help="BLIP captioning checkpoint: hub name or local directory")
    parser.add_argument("--blip-itm-checkpoint", help="BLIP ITM checkpoint: hub name or local directory")
    parser.add_argument("--no-blip", action="store_true", help="export CLIP only")
    parser.add_argument("--int8", action="store_true", help="also write dynamic-int8 variants (CPU) with parity vs fp32")
    parser.add_argument(
        "--int8-static", action="store_true", help="also write static-int8 QDQ variants (CPU) calibrated on product photos/titles, with parity vs fp32"
    )
    parser.add_argument("--fp16", action="store_true", help="also write fp16 variants (GPU) with parity vs fp32")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--quiet", action="store_true", help="only print the summary line")
    parser.add_argument("--verbose", action="store_true", help="show library warnings and logs")
    return parser


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """The preset with command-line overrides applied."""
    if args.preset == "auto":
        from export.hub import hub_reachable

        args.preset = "base" if hub_reachable() else "tiny"
        if args.preset == "tiny":
            print("[export] model hub unreachable: using the offline 'tiny' preset (random weights)", file=sys.stderr)
    preset = load_preset(args.preset)
    clip = preset["clip"]
    if args.clip_arch:
        clip["arch"] = args.clip_arch
        clip["pretrained"] = None
    if args.clip_pretrained:
        clip["pretrained"] = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    blip = None if args.no_blip else preset.get("blip")
    if blip is not None:
        if args.blip_checkpoint:
            blip.pop("config", None)
            blip["checkpoint"] = args.blip_checkpoint
        if args.blip_itm_checkpoint:
            blip["itm_checkpoint"] = args.blip_itm_checkpoint
    elif args.blip_checkpoint:
        blip = {"checkpoint": args.blip_checkpoint, "itm_checkpoint": args.blip_itm_checkpoint}
    return {"preset": args.preset, "clip": clip, "blip": blip}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "open_clip_torch", "transformers", "onnx", "onnxruntime", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def run_export(config: dict[str, Any], out: Path, opset: int, variants: Sequence[str], log=print) -> dict[str, Any]:
    """Export everything into a staging dir, then move it into `out`; returns the manifest."""
    from export.clip import export_clip
    from export.writer import staged_repository

    started = time.perf_counter()
    with staged_repository(out) as staging:
        clip_family, models = export_clip(config["clip"], staging, opset, variants, log)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "preset": config["preset"],
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "opset": opset,
            "versions": _versions(),
            "clip": clip_family,
            "blip": None,
            "models": models,
        }
        if config.get("blip"):
            from export.blip import export_blip

            blip_family, blip_models = export_blip(config["blip"], staging, opset, variants, log)
            manifest["blip"] = blip_family
            manifest["models"].update(blip_models)
        manifest["export_seconds"] = round(time.perf_counter() - started, 2)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def summary(manifest: dict[str, Any], out: Path) -> str:
    worst_diff = max(
        row["max_abs_diff"] for entry in manifest["models"].values() for row in entry.get("parity", {}).values()
    )
    worst_cos = min(
        row["min_cosine"] for entry in manifest["models"].values() for row in entry.get("parity", {}).values()
    )
    parts = [
        f"exported {len(manifest['models'])} graphs ({', '.join(manifest['models'])}) to {out}",
        f"in {manifest['export_seconds']} s",
        f"fp32 parity: max abs diff {worst_diff:.2e}, min cosine {worst_cos:.6f}",
    ]
    caption = (manifest.get("blip") or {}).get("caption_parity")
    if caption is not None:
        parts.append(f"greedy caption ids equal to generate(): {caption.get('greedy_ids_equal')}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True))
    variants = [v for v, wanted in (("int8", args.int8), ("int8_static", args.int8_static), ("fp16", args.fp16)) if wanted]
    try:
        config = resolve_config(args)
        manifest = run_export(config, args.out, args.opset, variants, log)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("export interrupted; the model repository was left as it was", file=sys.stderr)
        return 130
    print(summary(manifest, args.out))
    return 0
