"""`mmsearch` / `python -m client`: index a catalog, search, describe, get, delete, embed, load-test.

Every subcommand takes the connection options (--address, --api-key, --tls, --ca-cert, --timeout,
--retries), also read from MMSEARCH_ADDRESS / MMSEARCH_API_KEY / MMSEARCH_TLS_CA.
Exit codes: 0 ok, 1 some rows or requests failed, 2 bad usage or the call failed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from google.protobuf.json_format import MessageToDict

from client.catalog import CatalogError, catalog_kind
from client.connection import DEFAULT_ADDRESS, ConnectionConfig
from client.errors import GatewayError
from client.messages import CHANNELS, MODES, SearchFilters, parse_weights
from client.retry import RetryPolicy
from client.sync import SearchClient
from client.tables import format_table
from retrieval.v1 import retrieval_pb2 as pb

PROG = "mmsearch"


def _connection_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--address", default=None, help=f"gateway host:port (env MMSEARCH_ADDRESS; default {DEFAULT_ADDRESS})")
    group.add_argument("--api-key", default=None, help="sent as 'authorization: Bearer KEY' (env MMSEARCH_API_KEY)")
    group.add_argument("--tls", action="store_true", default=None, help="use TLS (system roots unless --ca-cert)")
    group.add_argument("--ca-cert", type=Path, default=None, help="PEM root certificates; implies --tls (env MMSEARCH_TLS_CA)")
    group.add_argument("--client-cert", type=Path, default=None, help="PEM certificate chain for mutual TLS")
    group.add_argument("--client-key", type=Path, default=None, help="PEM private key for mutual TLS")
    group.add_argument("--server-name", default=None, help="TLS server name override")
    group.add_argument("--timeout", type=float, default=None, help="seconds per call, retries included (default 30)")
    group.add_argument("--retries", type=int, default=None, help="attempts on UNAVAILABLE, first one included (default 4)")
    return parent


def _config(args: argparse.Namespace) -> ConnectionConfig:
    overrides: dict[str, Any] = {
        "address": args.address,
        "api_key": args.api_key,
        "root_certificates": args.ca_cert,
        "client_certificate": args.client_cert,
        "client_key": args.client_key,
        "server_name": args.server_name,
        "timeout": args.timeout,
    }
    if args.tls or args.ca_cert or args.client_cert:
        overrides["tls"] = True
    if args.retries is not None:
        overrides["retry"] = RetryPolicy(max_attempts=max(1, args.retries))
    return ConnectionConfig.from_env(**overrides)


# --------------------------------------------------------------------------------------------
# index


def cmd_index(args: argparse.Namespace) -> int:
    from client.fetch import FetchOptions
    from client.indexer import IndexOptions, index_catalog
    from client.resume import default_state_path

    catalog = Path(args.catalog)
    try:
        catalog_kind(catalog)
    except CatalogError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not catalog.exists():
        print(f"error: {catalog}: no such file or folder", file=sys.stderr)
        return 2
    base = catalog / "index" if catalog.is_dir() else catalog.with_name(catalog.name)
    options = IndexOptions(
        catalog=catalog,
        state_path=args.state or default_state_path(catalog),
        failed_path=args.failed or Path(str(base) + ".failed.jsonl"),
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        max_rate=args.max_rate,
        restart=args.restart,
        progress=not args.no_progress,
        fetch=FetchOptions(
            concurrency=args.fetch_concurrency,
            per_host=args.fetch_per_host,
            timeout_s=args.fetch_timeout,
            retries=args.fetch_retries,
            max_bytes=args.max_image_bytes,
            cache_dir=None if args.no_image_cache else (args.image_cache or Path(str(base) + ".image-cache")),
        ),
    )
    for name, value in (("--fetch-concurrency", args.fetch_concurrency), ("--fetch-per-host", args.fetch_per_host),
                        ("--max-image-bytes", args.max_image_bytes)):
        if value < 1:
            print(f"error: {name} must be >= 1, got {value}", file=sys.stderr)
            return 2
    if args.fetch_timeout <= 0 or args.fetch_retries < 0:
        print("error: --fetch-timeout must be > 0 and --fetch-retries >= 0", file=sys.stderr)
        return 2
    config = _config(args)
    try:
        with SearchClient(config=config) as client:
            client.wait_until_serving(timeout=args.wait)
    except TimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = asyncio.run(index_catalog(config, options))
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


# --------------------------------------------------------------------------------------------
# search


def _attributes(pairs: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --attr expects key=value, got {pair!r}")
        out.setdefault(key, []).append(value)
    return out


def _score(hit: Any, channel: str) -> float | None:
    return float(hit.channel_scores[channel]) if channel in hit.channel_scores else None


def cmd_search(args: argparse.Namespace) -> int:
    text = " ".join(args.text or []) if args.text else (args.query or "")
    if not text and not args.image:
        print("error: give a text query, --image PATH, or both", file=sys.stderr)
        return 2
    filters = SearchFilters(
        categories=args.category or [],
        brands=args.brand or [],
        min_price=args.price_min,
        max_price=args.price_max,
        tags_any=args.tag or [],
        tags_all=args.tag_all or [],
        in_stock=True if args.in_stock else None,
        ids=args.id or [],
        attributes=_attributes(args.attr or []),
    )
    try:
        weights = parse_weights(args.weights) if args.weights else None
    except ValueError as error:
        print(f"error: --weights: {error}", file=sys.stderr)
        return 2
    with SearchClient(config=_config(args)) as client:
        response = client.search(
            text,
            args.image,
            top_k=args.top_k,
            weights=weights,
            filters=filters,
            mode=args.mode,
            combine=args.combine,
            rerank=args.rerank,
            text_weight=args.text_weight,
        )
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    kind = "composed" if text and args.image else ("image" if args.image else "text")
    query = f"{kind} query" + (f" {text!r}" if text else "") + (f" {'+ ' if text else ''}image {args.image}" if args.image else "")
    used = ", ".join(f"{c}={getattr(response.weights, c):.2f}" for c in CHANNELS if getattr(response.weights, c) > 0)
    mode = {pb.SEARCH_MODE_FUSED: "fused", pb.SEARCH_MODE_MULTI_VECTOR: "multi_vector"}.get(response.mode, str(response.mode))
    combine = "rrf" if response.combine == pb.COMBINE_RRF else "weighted"
    print(f"{query}: {len(response.hits)} hits in {response.timings.total_ms:.1f} ms ({mode}, {combine}, weights {used})")
    rows = []
    for rank, hit in enumerate(response.hits, start=1):
        p = hit.product
        price = round(p.price, 2) if p.HasField("price") else None
        rows.append([rank, p.id, p.title, p.category, price, round(hit.score, 4),
                     *(None if (s := _score(hit, c)) is None else round(s, 3) for c in CHANNELS)])
    headers = ["#", "id", "title", "category", "price", "score", "cos:image", "cos:title", "cos:caption", "keyword"]
    if rows:
        print(format_table(headers, rows, right=[True, False, False, False, True, True, True, True, True, True], max_width=40))
    return 0


# --------------------------------------------------------------------------------------------
# describe / get / delete / embed


def cmd_describe(args: argparse.Namespace) -> int:
    with SearchClient(config=_config(args)) as client:
        response = client.describe(args.image, max_tags=args.max_tags)
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
        return 0
    print(f"caption: {response.caption or '(no captioner)'}")
    if response.tags:
        print(format_table(["tag", "facet", "score"], [[t.term, t.facet, round(t.score, 4)] for t in response.tags]))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with SearchClient(config=_config(args)) as client:
        response = client.get(args.ids, include_vectors=args.vectors)
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
    else:
        rows = []
        for stored in response.products:
            p = stored.product
            rows.append([p.id, p.title, p.category, p.brand, round(p.price, 2) if p.HasField("price") else None,
                         ", ".join(p.tags[:6]), p.caption])
        if rows:
            print(format_table(["id", "title", "category", "brand", "price", "tags", "caption"], rows, max_width=40))
        if response.not_found:
            print(f"not found: {', '.join(response.not_found)}")
    return 1 if response.not_found else 0


def cmd_delete(args: argparse.Namespace) -> int:
    with SearchClient(config=_config(args)) as client:
        response = client.delete(args.ids)
    print(f"deleted {response.deleted}" + (f"; not found: {', '.join(response.not_found)}" if response.not_found else ""))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    if not args.text and not args.image:
        print("error: give --text and/or --image", file=sys.stderr)
        return 2
    with SearchClient(config=_config(args)) as client:
        response = client.embed(args.text or [], args.image or [])
    vectors = [("text", t, list(v.values)) for t, v in zip(args.text or [], response.text_vectors)]
    vectors += [("image", str(i), list(v.values)) for i, v in zip(args.image or [], response.image_vectors)]
    if args.json:
        print(json.dumps({"model": response.model, "dim": response.dim,
                          "vectors": [{"kind": k, "input": s, "vector": v} for k, s, v in vectors]}))
        return 0
    print(f"model {response.model}, dim {response.dim}")
    rows = [[k, s, "[" + ", ".join(f"{x:+.3f}" for x in v[:4]) + ", …]"] for k, s, v in vectors]
    print(format_table(["kind", "input", "vector"], rows, max_width=60))
    return 0


# --------------------------------------------------------------------------------------------
# load


def cmd_load(args: argparse.Namespace) -> int:
    from client import load_report
    from client.load import LoadPlan, run_load
    from client.workload import Workload, parse_mix

    try:
        mix = parse_mix(args.mix)
    except ValueError as error:
        print(f"error: --mix: {error}", file=sys.stderr)
        return 2
    if args.requests <= 0 and args.duration <= 0:
        print("error: bound the load with --requests and/or --duration", file=sys.stderr)
        return 2
    config = _config(args)
    plan = LoadPlan(
        concurrency=args.concurrency,
        rates=args.rate or [],
        requests=args.requests,
        duration=args.duration if args.duration > 0 else 3600.0,
        warmup=args.warmup,
        channels=args.channels,
        max_in_flight=args.max_in_flight,
        timeout=config.timeout or 30.0,
        cleanup=not args.keep_upserts,
    )
    filters = SearchFilters(categories=args.category or [], max_price=args.price_max) if (args.category or args.price_max) else None
    workload = Workload.build(mix, args.catalog, top_k=args.top_k, filters=filters, seed=args.seed)
    quiet = args.json == "-"
    log = sys.stderr if quiet else sys.stdout
    steps = plan.rates or plan.concurrency
    print(f"load -> {config.address}: {workload.describe()}; steps {' '.join(f'{s:g}' for s in steps)} "
          f"({'rate' if plan.rates else 'concurrency'}), each {args.duration:g}s"
          + (f" or {args.requests} requests" if args.requests else "") + f", {plan.channels} channel(s)", file=log)

    def on_step(result: Any) -> None:
        print(f"  step {result.mode}={result.level:g}: {result.ok}/{result.sent} ok, {result.qps:.1f} QPS", file=sys.stderr)

    try:
        results = asyncio.run(run_load(config, workload, plan, on_step=on_step))
    except TimeoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(load_report.table(results), file=log)
    meta = {"address": config.address, "mix": {k: round(v, 4) for k, v in mix.items()}, "requests_per_step": args.requests, "duration_per_step": args.duration,
            "channels": plan.channels, "top_k": args.top_k}
    if args.json:
        text = load_report.as_json(results, meta)
        if quiet:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"JSON report: {args.json}", file=log)
    if args.csv:
        Path(args.csv).write_text(load_report.as_csv(results))
        print(f"CSV report: {args.csv}", file=log)
    if args.plot:
        skipped = load_report.plot(results, Path(args.plot), title=f"{PROG} load: {workload.describe()}")
        print(skipped or f"plot: {args.plot}", file=log)
    return 1 if any(r.error_count for r in results) else 0


def cmd_health(args: argparse.Namespace) -> int:
    with SearchClient(config=_config(args)) as client:
        if args.wait:
            client.wait_until_serving(timeout=args.wait)
        print(client.health(args.service))
    return 0


# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Client of the multi-modal product search gateway.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    conn = _connection_parent()

    p = sub.add_parser("index", parents=[conn], help="stream a catalog (JSONL, CSV or image folder) into the gateway",
                       description="Upsert every row of a catalog in batches, with a progress bar; resumes after an interruption.")
    p.add_argument("catalog", help="catalog.jsonl, catalog.csv, or a folder of images (paths relative to the catalog file)")
    p.add_argument("--batch-size", type=int, default=32, help="products per UpsertProducts stream (default 32)")
    p.add_argument("--concurrency", type=int, default=2, help="streams in flight (default 2)")
    p.add_argument("--max-rate", type=float, default=0.0, help="at most this many rows/s (default: no limit)")
    p.add_argument("--state", type=Path, default=None, help="resume state file (default: next to the catalog)")
    p.add_argument("--failed", type=Path, default=None, help="failed rows, JSONL with reasons (default CATALOG.failed.jsonl)")
    p.add_argument("--restart", action="store_true", help="forget the resume state and send every row")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the gateway to be SERVING (default 60)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    g = p.add_argument_group("image URLs (rows with image_url)")
    g.add_argument("--fetch-concurrency", type=int, default=16, help="downloads in flight in all (default 16)")
    g.add_argument("--fetch-per-host", type=int, default=4, help="downloads in flight per host (default 4)")
    g.add_argument("--fetch-timeout", type=float, default=15.0, help="seconds per download attempt (default 15)")
    g.add_argument("--fetch-retries", type=int, default=3, help="retries after timeouts, connection errors, 429/5xx (default 3)")
    g.add_argument("--max-image-bytes", type=int, default=10 * 1024 * 1024, help="larger downloads fail (default 10 MiB)")
    g.add_argument("--image-cache", type=Path, default=None, help="download cache folder (default CATALOG.image-cache)")
    g.add_argument("--no-image-cache", action="store_true", help="do not cache downloads on disk")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", parents=[conn], help="search by text, image, or both",
                       description="Search by text, by image, or both (an image plus a text modifier), with filters.")
    p.add_argument("text", nargs="*", help="query text (or the modifier of an image query)")
    p.add_argument("--query", "-q", default=None, help="query text (alternative to the positional words)")
    p.add_argument("--image", "-i", type=Path, default=None, help="query image file")
    p.add_argument("--top-k", "-k", type=int, default=10)
    p.add_argument("--category", action="append", help="any of these categories (repeatable)")
    p.add_argument("--brand", action="append", help="any of these brands (repeatable)")
    p.add_argument("--price-min", type=float, default=None)
    p.add_argument("--price-max", type=float, default=None)
    p.add_argument("--tag", action="append", help="has at least one of these tags (repeatable)")
    p.add_argument("--tag-all", action="append", help="has all of these tags (repeatable)")
    p.add_argument("--attr", action="append", help="attribute filter key=value (repeatable; keys the gateway allows)")
    p.add_argument("--id", action="append", help="restrict to these product ids (repeatable)")
    p.add_argument("--in-stock", action="store_true", help="only products in stock")
    p.add_argument("--weights", default=None, help="channel weights, e.g. image=0.6,title=0.3,caption=0.1")
    p.add_argument("--mode", choices=sorted(MODES), default="fused")
    p.add_argument("--combine", choices=["weighted", "rrf"], default="weighted", help="multi_vector only")
    p.add_argument("--text-weight", type=float, default=None, help="composed queries: share of the text (default 0.5)")
    p.add_argument("--rerank", action="store_true", help="re-score with BLIP ITM (needs the ITM model)")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("describe", parents=[conn], help="caption and tags of an image", description="BLIP caption and interrogator tags of one image.")
    p.add_argument("image", type=Path)
    p.add_argument("--max-tags", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("get", parents=[conn], help="stored products by id", description="Show stored products by id.")
    p.add_argument("ids", nargs="+")
    p.add_argument("--vectors", action="store_true", help="include the channel vectors (with --json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("delete", parents=[conn], help="delete products by id", description="Delete products by id.")
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("embed", parents=[conn], help="raw CLIP vectors of texts and images", description="Raw (L2-normalized) CLIP vectors.")
    p.add_argument("--text", "-t", action="append", help="text to embed (repeatable)")
    p.add_argument("--image", "-i", type=Path, action="append", help="image file to embed (repeatable)")
    p.add_argument("--json", action="store_true", help="print full vectors as JSON")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("load", parents=[conn], help="load generator: concurrency sweep or target rate",
                       description="Send a mix of searches (and optional upserts) at each concurrency level or target rate; "
                                   "report QPS and p50/p95/p99/max latency per step. Load goes only to --address.")
    p.add_argument("--concurrency", "-c", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrency sweep (default 1 4 16 64)")
    p.add_argument("--rate", type=float, nargs="+", default=None, help="target rates in requests/s (replaces the concurrency sweep)")
    p.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per step (default 10)")
    p.add_argument("--requests", "-n", type=int, default=0, help="at most this many requests per step (default: duration only)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load first (default 1)")
    p.add_argument("--mix", default="text=0.4,image=0.3,composed=0.3", help="request mix, kinds text,image,composed,upsert,get")
    p.add_argument("--catalog", type=Path, default=None, help="take query images and texts from this catalog")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--category", action="append", help="filter every search to these categories")
    p.add_argument("--price-max", type=float, default=None, help="filter every search to price <= this")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) shared by the workers")
    p.add_argument("--max-in-flight", type=int, default=256, help="rate mode: most requests at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-upserts", action="store_true", help="keep the products that upserts created (default: delete)")
    p.add_argument("--json", default=None, metavar="PATH", help="JSON report ('-' = stdout, table to stderr)")
    p.add_argument("--csv", default=None, metavar="PATH", help="CSV report")
    p.add_argument("--plot", default=None, metavar="PNG", help="latency/throughput plot (needs matplotlib)")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("health", parents=[conn], help="grpc.health.v1 status of the gateway", description="Print the gateway's health status.")
    p.add_argument("--service", default="")
    p.add_argument("--wait", type=float, default=0.0, help="wait up to this many seconds for SERVING")
    p.set_defaults(func=cmd_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GatewayError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
