"""GetProducts and DeleteProducts: id lookups in the store."""
from __future__ import annotations

from gateway.core import Core
from gateway.metrics import StageTimer
from gateway.rows import record_of, vectors_message
from gateway.validation import check_ids
from retrieval.v1 import retrieval_pb2 as pb


async def get_products(core: Core, request: pb.GetProductsRequest, timer: StageTimer) -> pb.GetProductsResponse:
    with timer.stage("preprocess"):
        ids = check_ids(list(request.ids), core.settings)
        store = core.require_store()
    with timer.stage("store"):
        rows = await core.guard_store(store.get, ids, request.include_vectors)
    by_id = {row["id"]: row for row in rows}
    response = pb.GetProductsResponse()
    for product_id in ids:
        row = by_id.get(product_id)
        if row is None:
            response.not_found.append(product_id)
            continue
        item = pb.StoredProduct(product=record_of(row))
        if request.include_vectors:
            item.vectors.CopyFrom(vectors_message(row))
        response.products.append(item)
    return response


async def delete_products(core: Core, request: pb.DeleteProductsRequest, timer: StageTimer) -> pb.DeleteProductsResponse:
    with timer.stage("preprocess"):
        ids = list(dict.fromkeys(check_ids(list(request.ids), core.settings)))
        store = core.require_store()
    with timer.stage("store"):
        existing = {row["id"] for row in await core.guard_store(store.get, ids, False)}
        if existing:
            await core.guard_store(store.delete, sorted(existing))
    return pb.DeleteProductsResponse(deleted=len(existing), not_found=[i for i in ids if i not in existing])
