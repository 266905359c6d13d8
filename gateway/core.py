"""The gateway's dependencies in one object: settings, inference backend, store, tagger, health.

RPC logic (search.py, ingest.py, products.py, describe.py) takes a Core and plain proto messages,
so it runs in tests without a socket. Store calls are blocking pymilvus calls: they run in a
dedicated thread pool. A background probe marks health NOT_SERVING while the backend or the
store is down and reconnects them, so the gateway recovers without a restart.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from gateway.backends.base import InferenceBackend, create_backend
from gateway.errors import Unavailable
from gateway.fusion import dense_part, same_weights
from gateway.metrics import DEPENDENCY_UP
from gateway.settings import Settings
from gateway.store import MilvusConfig, MilvusStore, SchemaMismatch
from gateway.tagger import Tagger

log = logging.getLogger("gateway.core")


class Core:
    def __init__(self, settings: Settings, backend: InferenceBackend | None = None, store: MilvusStore | None = None) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings)
        self.store = store
        self.tagger: Tagger | None = None
        self._store_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store")
        self.backend_up = False
        self.store_up = False
        self._on_health: list[Callable[[bool], None]] = []
        self._probe_task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._weights_warned = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Best effort: a dependency that is down now is retried by the probe. A store whose schema
        this gateway cannot serve stops the start with one clear line (exit code 2)."""
        try:
            await self.probe()
        except SchemaMismatch as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
        self._probe_task = asyncio.create_task(self._probe_loop())

    async def close(self) -> None:
        if self._probe_task:
            self._probe_task.cancel()
        await self.backend.close()
        if self.store is not None:
            await self.run_store(self.store.close)
        self._store_pool.shutdown(wait=False, cancel_futures=True)

    def on_health(self, callback: Callable[[bool], None]) -> None:
        self._on_health.append(callback)

    @property
    def serving(self) -> bool:
        return self.backend_up and self.store_up

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval_s)
            try:
                await self.probe()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # close() stops the probe
                # A dependency's client cancelled the probe's call under it (its channel was closed and
                # reopened): that is a failed probe, not the end of probing.
                log.warning("health probe: a dependency call was cancelled; probing again")
            except SchemaMismatch as exc:  # found once the store became reachable: as at start
                log.error("%s", exc)
                raise SystemExit(2) from None
            except Exception:  # noqa: BLE001 - the probe must never die
                log.exception("health probe failed")

    async def probe(self) -> bool:
        """Check (and connect) both dependencies; update health."""
        async with self._lock:
            # concurrently: opening a large store (loading its collection) overlaps loading the models
            store_lacked_dim = self.store is None or not self.store.dim
            self.backend_up, self.store_up = await asyncio.gather(self._probe_backend(), self._probe_store())
            if self.backend_up and not self.store_up and store_lacked_dim:
                # a new collection waited for the models' dimension, which is known now: create it at once
                # rather than one probe interval later (the first start of an empty store)
                self.store_up = await self._probe_store()
            if self.backend_up and self.store_up and self.store.dim != self.backend.dim:
                raise SchemaMismatch(
                    f"collection {self.settings.collection!r} holds {self.store.dim}-d vectors but the models give "
                    f"{self.backend.dim}-d: use another --collection or store"
                )
        DEPENDENCY_UP.labels("backend").set(int(self.backend_up))
        DEPENDENCY_UP.labels("store").set(int(self.store_up))
        self._notify(self.serving)
        return self.serving

    async def _probe_backend(self) -> bool:
        try:
            if not self.backend.dim:
                await self.backend.start()
            if not await self.backend.ping():
                return False
            if self.tagger is None:
                cache = Path(self.settings.model_repository) / ".cache" if self.settings.backend == "local" else Path("data/cache")
                self.tagger = await Tagger.build(self.backend.embed_texts, cache)
            return True
        except Exception as exc:  # noqa: BLE001
            log.warning("backend %s is down: %s", self.backend.name, exc)
            return False

    async def _probe_store(self) -> bool:
        if self.store is None:
            # dim 0: an existing collection says its dimension, so the store opens before the models are loaded
            self.store = MilvusStore(self._store_config(self.backend.dim))
        if not self.store.dim and self.backend.dim:
            self.store.dim = self.store.config.dim = self.backend.dim
        up = await self.run_store(self.store.ping)
        if up:
            await self._check_fused_weights()
        return up

    async def _check_fused_weights(self) -> None:
        """A new collection records the configured weights; an existing one keeps its own, and a
        difference from the configuration is said once (fused searches with the configured
        weights are then answered by exact multi-vector scoring, see gateway/search.py)."""
        configured = dense_part(self.settings.weights.as_dict())
        stored = self.store.fused_weights
        if stored is None and configured is not None:
            await self.run_store(self.store.record_fused_weights, configured)
        elif stored is not None and configured is not None and not same_weights(stored, configured) and not self._weights_warned:
            self._weights_warned = True
            log.warning(
                "the stored fused vectors were built with weights %s, the configured weights are %s: fused-mode searches "
                "with the configured weights are scored exactly per channel (slower) until you run "
                "`python -m gateway.maintenance rebuild-fused` with the gateway stopped (docs/gateway.md)", stored, configured,
            )

    def _store_config(self, dim: int) -> MilvusConfig:
        return MilvusConfig.from_settings(self.settings, dim)

    # -- helpers for the RPC logic -------------------------------------------------------------
    async def run_store(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._store_pool, fn, *args)

    def require_store(self) -> MilvusStore:
        if self.store is None:
            raise Unavailable("store is not connected yet (the inference backend is not up)")
        return self.store

    def require_tagger(self) -> Tagger:
        if self.tagger is None:
            raise Unavailable(f"inference backend {self.backend.name} is not up yet")
        return self.tagger

    async def guard_backend(self, awaitable):
        """Await a backend call; transport failures mark the backend down (health follows)."""
        try:
            return await awaitable
        except Unavailable:
            self.backend_up = False
            self._notify(False)
            raise

    async def guard_store(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self.run_store(fn, *args)
        except Unavailable:
            self.store_up = False
            self._notify(False)
            raise

    def _notify(self, serving: bool) -> None:
        for callback in self._on_health:
            callback(serving)
