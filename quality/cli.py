"""Command line of the quality package: `finetune` (contrastive training) and `eval` (harness)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from quality.datasets import PairSet, load_catalog, load_cc_tsv, load_fashion_mnist, load_karpathy


def load_pairs(kind: str, path: Path | None, limit: int | None, split: str = "train", image_root: Path | None = None) -> PairSet:
    if kind == "fashion-mnist":
        return load_fashion_mnist(split, limit=limit)
    if path is None:
        raise SystemExit(f"--data {kind} needs --path")
    if kind == "karpathy":
        pairs = load_karpathy(path, image_root, split)
    else:
        pairs = load_cc_tsv(path, image_root) if kind == "cc-tsv" else load_catalog(path)
    return pairs.subset(range(min(limit, len(pairs)))) if limit else pairs


def _finetune(args: argparse.Namespace) -> int:
    from quality.finetune import FinetuneConfig, finetune

    pairs = load_pairs(args.data, args.path, args.limit)
    train, val = pairs.split(args.val_fraction, args.seed)
    if args.val_limit and len(val) > args.val_limit:
        val = val.subset(range(args.val_limit))
    cfg = FinetuneConfig(arch=args.arch, pretrained=args.pretrained, out=args.out, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup, loss=args.loss,
                         seed=args.seed, device=args.device, resume=args.resume, max_minutes=args.max_minutes,
                         threads=args.threads)
    result = finetune(train, val, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    last = result["history"][-1] if result["history"] else {}
    print(f"fine-tuned {args.arch} on {len(train)} pairs in {result['seconds']} s -> {result['final']}; "
          f"val t2i hit@1 {last.get('t2i_hit@1', float('nan')):.3f}, i2t hit@1 {last.get('i2t_hit@1', float('nan')):.3f}")
    print(f"export: python -m export --clip-arch {args.arch} --clip-pretrained {result['final']} --no-blip --out REPO")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from quality.eval import EvalConfig, run_eval
    from quality.evalset import SplitSizes

    sizes = SplitSizes(validation=args.validation_products, test=args.test_products,
                       image_queries=(args.image_queries[0], args.image_queries[1]), brand_queries=(args.brand_queries[0], args.brand_queries[1]))
    cfg = EvalConfig(repository=args.repository, out=args.out, workdir=args.workdir, sizes=sizes, seed=args.seed,
                     gateway=not args.no_gateway, address=args.address, gateway_args=args.gateway_arg or [], step=args.step,
                     text_weight=args.text_weight)
    report = run_eval(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report["tables"])
    print(json.dumps(report["targets"], indent=2, default=str))
    print(f"wrote {args.out}/eval.json, {args.out}/eval.md, {args.out}/eval.png")
    return 0


def _retrieval(args: argparse.Namespace) -> int:
    from quality.retrieval import run_retrieval

    pairs = load_pairs(args.data, args.path, args.limit, split=args.split, image_root=args.image_root)
    report = run_retrieval(pairs, args.repository, address=args.address, workdir=args.workdir,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quality", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="contrastive (InfoNCE) fine-tuning of an open_clip model")
    ft.add_argument("--data", choices=["fashion-mnist", "catalog", "cc-tsv", "karpathy"], default="fashion-mnist")
    ft.add_argument("--path", type=Path, help="catalog JSONL/CSV or CC TSV")
    ft.add_argument("--arch", default="mm-fmnist-clip")
    ft.add_argument("--pretrained", default=None, help="open_clip tag or checkpoint file (default: random init)")
    ft.add_argument("--out", type=Path, default=Path("runs/fmnist"))
    ft.add_argument("--epochs", type=int, default=3)
    ft.add_argument("--batch-size", type=int, default=256)
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--warmup", type=int, default=50)
    ft.add_argument("--loss", choices=["auto", "clip", "label"], default="auto")
    ft.add_argument("--limit", type=int, help="use at most this many pairs")
    ft.add_argument("--val-fraction", type=float, default=0.05)
    ft.add_argument("--val-limit", type=int, default=2000)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--device", default="auto")
    ft.add_argument("--threads", type=int)
    ft.add_argument("--max-minutes", type=float, help="stop and save after this much wall time")
    ft.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ft.set_defaults(func=_finetune)
    ev = sub.add_parser("eval", help="leak-free evaluation: reference baselines + fusion variants, and the gateway compared")
    ev.add_argument("--repository", type=Path, required=True, help="exported model repository (its manifest names the checkpoint)")
    ev.add_argument("--validation-products", type=int, default=3000)
    ev.add_argument("--test-products", type=int, default=7000)
    ev.add_argument("--image-queries", type=int, nargs=2, default=[200, 300], metavar=("VAL", "TEST"))
    ev.add_argument("--brand-queries", type=int, nargs=2, default=[100, 150], metavar=("VAL", "TEST"))
    ev.add_argument("--step", type=float, default=0.1, help="weight grid step")
    ev.add_argument("--text-weight", type=float, default=0.5,
                    help="composed queries' text share, in the reference and in every request to the gateway (its text_weight)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--no-gateway", action="store_true", help="reference only")
    ev.add_argument("--address", help="use a running gateway (its store must be empty) instead of starting one")
    ev.add_argument("--gateway-arg", action="append", help="extra flag for the started gateway, e.g. --gateway-arg=--index-type=FLAT")
    ev.add_argument("--workdir", type=Path, default=Path("runs/eval-work"))
    ev.add_argument("--out", type=Path, default=Path("runs/eval"))
    ev.set_defaults(func=_eval)
    rt = sub.add_parser("retrieval", help="text->image R@1/5/10 of the exported ONNX path (gateway Embed) and of PyTorch")
    rt.add_argument("--data", choices=["karpathy", "cc-tsv", "catalog"], required=True)
    rt.add_argument("--path", type=Path, required=True, help="dataset_coco.json / dataset_flickr30k.json, a TSV or a catalog")
    rt.add_argument("--image-root", type=Path, help="folder the image paths are relative to (COCO: the folder holding val2014/)")
    rt.add_argument("--split", default="test", help="Karpathy split (test: 1k Flickr30k / 5k COCO images)")
    rt.add_argument("--limit", type=int)
    rt.add_argument("--repository", type=Path, required=True)
    rt.add_argument("--address", help="a running gateway (default: start one)")
    rt.add_argument("--workdir", type=Path, default=Path("runs/retrieval-work"))
    rt.set_defaults(func=_retrieval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
