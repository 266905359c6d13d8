"""Command line of the quality package: `finetune` (contrastive training) and `eval` (harness)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from quality.datasets import PairSet, load_catalog, load_cc_tsv, load_fashion_mnist


def load_pairs(kind: str, path: Path | None, limit: int | None, split: str = "train") -> PairSet:
    if kind == "fashion-mnist":
        return load_fashion_mnist(split, limit=limit)
    if path is None:
        raise SystemExit(f"--data {kind} needs --path")
    pairs = load_cc_tsv(path) if kind == "cc-tsv" else load_catalog(path)
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

    cfg = EvalConfig(repository=args.repository, out=args.out, address=args.address, limit=args.limit,
                     image_queries=args.image_queries, store_uri=args.store_uri, skip_index=args.skip_index,
                     top_k=args.top_k, workdir=args.workdir, catalog=args.catalog)
    report = run_eval(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(report["table"])
    print(f"wrote {args.out}/eval.json, {args.out}/eval.md, {args.out}/eval.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quality", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="contrastive (InfoNCE) fine-tuning of an open_clip model")
    ft.add_argument("--data", choices=["fashion-mnist", "catalog", "cc-tsv"], default="fashion-mnist")
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
    ev = sub.add_parser("eval", help="measure search quality through the gateway + Milvus and by brute force")
    ev.add_argument("--repository", type=Path, required=True, help="exported model repository")
    ev.add_argument("--catalog", type=Path, help="catalog JSONL to index (default: Fashion-MNIST test split)")
    ev.add_argument("--limit", type=int, default=10000, help="products (Fashion-MNIST test images)")
    ev.add_argument("--image-queries", type=int, default=200, help="image->image queries")
    ev.add_argument("--top-k", type=int, default=10)
    ev.add_argument("--address", help="use a running gateway instead of starting one")
    ev.add_argument("--store-uri", help="Milvus Lite file for the started gateway")
    ev.add_argument("--workdir", type=Path, default=Path("runs/eval-work"))
    ev.add_argument("--skip-index", action="store_true", help="the catalog is already indexed")
    ev.add_argument("--out", type=Path, default=Path("runs/eval"))
    ev.set_defaults(func=_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
