"""Store maintenance with the gateway stopped: rebuild fused vectors, migrate an older collection.

    python -m gateway.maintenance rebuild-fused [gateway flags]   # new default weights -> fused vectors
    python -m gateway.maintenance migrate [gateway flags]         # schema 1 (before the keyword channel) -> 2

Both read the gateway's settings (flags and MM_* environment, e.g. --store-uri, --collection,
--weight-image) and make no model calls: fused vectors are rebuilt from the stored channel
vectors. Milvus Lite allows one process per file, so stop the gateway first.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from gateway import fusion
from gateway.errors import Unavailable
from gateway.filters import string_list
from gateway.rows import (
    CHANNEL_MASK_FIELD, FUSED_FIELD, KEYWORD, KEYWORD_TEXT_FIELD, VECTOR_FIELD, keyword_text, mask_of, present_channels,
)
from gateway.settings import Settings, load_settings
from gateway.store import MilvusConfig, MilvusStore, SchemaMismatch

log = logging.getLogger("gateway.maintenance")
BATCH = 500


def with_fused(row: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """The row with its fused vector rebuilt for `weights` from its stored channel vectors."""
    have = present_channels(row)
    channels = {c: np.asarray(row[f], np.float32)[None, :] for c, f in VECTOR_FIELD.items()}
    out = dict(row)
    out[FUSED_FIELD] = fusion.fused_vectors(channels, [have], weights)[0]
    return out


def _all_ids(client, collection: str) -> list[str]:
    iterator = client.query_iterator(collection, batch_size=5000, filter="", output_fields=["id"])
    ids: list[str] = []
    try:
        while batch := iterator.next():
            ids.extend(r["id"] for r in batch)
    finally:
        iterator.close()
    return ids


def rebuild_fused(settings: Settings) -> int:
    """The new weights are recorded only after every row was rewritten: an interrupted run leaves the old
    weights recorded over partly rebuilt vectors, and running the command again finishes the job."""
    weights = fusion.dense_part(settings.weights.as_dict())
    store = MilvusStore(MilvusConfig.from_settings(settings, dim=0))
    store.connect()
    ids = _all_ids(store.client, store.config.collection)
    fields = store.fields(vectors=True, keyword_text=True)
    with tqdm(total=len(ids), unit="product", desc="rebuild fused vectors") as bar:
        for start in range(0, len(ids), BATCH):
            rows = store.query(f"id in {string_list(ids[start : start + BATCH])}", fields)
            store.upsert([with_fused(r, weights) for r in rows])
            bar.update(len(rows))
    store.record_fused_weights(weights)
    store.close()
    print(f"rebuilt the fused vectors of {len(ids)} products for weights {weights}")
    return 0


def migrated_row(old: dict[str, Any], weights: dict[str, float]) -> dict[str, Any]:
    """A schema-1 row in the schema-2 layout: channels without content dropped (schema 1 embedded the
    product id as their text), the keyword text, the fused vector for `weights`."""
    meta = old.get("meta") or {}
    tags = list(meta.get("tags", []))
    present = {"image"}
    if fusion.title_text(old.get("title", ""), old.get("description", "")):
        present.add("title")
    if fusion.caption_text(old.get("caption", ""), tags):
        present.add("caption")
    text = keyword_text(old["id"], old.get("title", ""), old.get("description", ""), old.get("brand", ""), old.get("caption", ""), tags)
    if text:
        present.add(KEYWORD)
    row = {k: v for k, v in old.items() if k not in ("keyword_sparse",)}
    dim = len(old[FUSED_FIELD])
    for channel, name in VECTOR_FIELD.items():
        if channel not in present:
            row[name] = np.zeros(dim, np.float32)
    row[CHANNEL_MASK_FIELD] = mask_of(present)
    row[KEYWORD_TEXT_FIELD] = text
    return with_fused(row, weights)


def migrate(settings: Settings) -> int:
    """Copy schema-1 rows into a schema-2 collection of the same name (through a temporary one:
    Milvus Lite cannot rename collections), then drop the temporary copy."""
    from pymilvus import MilvusClient

    name = settings.collection
    weights = fusion.dense_part(settings.weights.as_dict())
    client = MilvusClient(uri=settings.store_uri, token=settings.store_token)
    if not client.has_collection(name):
        print(f"no collection {name!r} in {settings.store_uri!r}: nothing to migrate", file=sys.stderr)
        return 2
    info = client.describe_collection(name)
    dim = int(next(f for f in info["fields"] if f["name"] == FUSED_FIELD)["params"]["dim"])
    client.load_collection(name)
    old_fields = [f["name"] for f in info["fields"]]
    if CHANNEL_MASK_FIELD in old_fields:
        print(f"collection {name!r} already has the current schema", file=sys.stderr)
        return 0
    ids = _all_ids(client, name)
    client.close()
    temp = name + "_migrating"

    def copy(source_client, source: str, target: MilvusStore, transform) -> None:
        with tqdm(total=len(ids), unit="product", desc=f"{source} -> {target.config.collection}") as bar:
            for start in range(0, len(ids), BATCH):
                rows = source_client.query(source, filter=f"id in {string_list(ids[start : start + BATCH])}", output_fields=["*"])
                target.upsert([transform(dict(r)) for r in rows])
                bar.update(len(rows))

    staging = MilvusStore(MilvusConfig.from_settings(settings, dim=dim, collection=temp))
    staging.connect()
    copy(staging.client, name, staging, lambda r: migrated_row(r, weights))
    staging.client.drop_collection(name)
    target = MilvusStore(MilvusConfig.from_settings(settings, dim=dim))
    target.connect()
    copy(target.client, temp, target, lambda r: {k: v for k, v in r.items() if k != "keyword_sparse"})
    target.record_fused_weights(weights)
    target.client.drop_collection(temp)
    target.client.drop_collection(staging.meta_collection)
    target.close()
    print(f"migrated {len(ids)} products of {name!r} to the current schema (fused weights {weights})")
    return 0


COMMANDS = {"rebuild-fused": rebuild_fused, "migrate": migrate}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m gateway.maintenance", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return COMMANDS[args.command](load_settings(rest))
    except (SchemaMismatch, Unavailable) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
