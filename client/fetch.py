"""Fetching catalog images by URL: bounded concurrency, per-host limits, timeouts, retries, a size cap, a cache.

`mmsearch index` uses it for rows that name an `image_url` (http/https) instead of a file. A
failure is a `FetchError` whose message is the reason written to the failure file; it never stops
the run. What is retried: connection errors, timeouts, HTTP 408/425/429/5xx (exponential backoff
with jitter, honouring a short Retry-After); what is not: other 4xx, a body over the size cap, a
content type that is not an image. Fetched bytes are cached on disk by the URL's SHA-256, so a
resumed or repeated run does not download again.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class FetchError(Exception):
    """An image URL could not be fetched; the message says why (it goes to the failure file)."""


@dataclass
class FetchOptions:
    concurrency: int = 16  # downloads in flight in all
    per_host: int = 4  # downloads in flight per host (be polite to one shop's CDN)
    timeout_s: float = 15.0  # per attempt, connect + headers + body
    retries: int = 3  # attempts after the first
    backoff_s: float = 0.5  # first retry delay; doubles each retry, with jitter
    max_bytes: int = 10 * 1024 * 1024  # the gateway's default image limit
    cache_dir: Path | None = None  # None: no cache
    user_agent: str = "mmsearch-index/1"


@dataclass
class FetchStats:
    fetched: int = 0
    cache_hits: int = 0
    failed: int = 0
    retries: int = 0
    bytes: int = 0
    seconds: float = 0.0
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"fetched": self.fetched, "cache_hits": self.cache_hits, "failed": self.failed, "retries": self.retries,
                "bytes": self.bytes}


def check_url(url: str) -> str:
    """The URL if it is http(s) with a host, else ValueError naming the problem (a catalog row error)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"image_url must be an http(s) URL, got {url[:200]!r}")
    return url.strip()


class ImageFetcher:
    """Async downloads with aiohttp; use as `async with ImageFetcher(options) as fetcher`."""

    def __init__(self, options: FetchOptions | None = None) -> None:
        self.options = options or FetchOptions()
        self.stats = FetchStats()
        self._session = None
        self._all = asyncio.Semaphore(max(1, self.options.concurrency))
        self._hosts: dict[str, asyncio.Semaphore] = {}
        if self.options.cache_dir is not None:
            self.options.cache_dir.mkdir(parents=True, exist_ok=True)

    async def __aenter__(self) -> "ImageFetcher":
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
            headers={"User-Agent": self.options.user_agent, "Accept": "image/*"},
            connector=aiohttp.TCPConnector(limit=self.options.concurrency, limit_per_host=self.options.per_host),
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._session is not None:
            await self._session.close()

    # -- cache -----------------------------------------------------------------------------------
    def _cache_path(self, url: str) -> Path | None:
        if self.options.cache_dir is None:
            return None
        digest = hashlib.sha256(url.encode()).hexdigest()
        return self.options.cache_dir / digest[:2] / digest

    def _cache_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)  # atomic: a crash never leaves a truncated image in the cache

    # -- fetch -----------------------------------------------------------------------------------
    async def fetch(self, url: str) -> bytes:
        """The image's bytes, from the cache or the network; FetchError with the reason otherwise."""
        cached = self._cache_path(url)
        if cached is not None and cached.is_file():
            self.stats.cache_hits += 1
            return await asyncio.to_thread(cached.read_bytes)
        host = urlsplit(url).netloc.lower()
        per_host = self._hosts.setdefault(host, asyncio.Semaphore(max(1, self.options.per_host)))
        try:
            async with self._all, per_host:
                data = await self._with_retries(url)
        except FetchError as error:
            self.stats.failed += 1
            key = str(error).split(":")[0]
            self.stats.by_reason[key] = self.stats.by_reason.get(key, 0) + 1
            raise
        self.stats.fetched += 1
        self.stats.bytes += len(data)
        if cached is not None:
            await asyncio.to_thread(self._cache_write, cached, data)
        return data

    async def _with_retries(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return await self._once(url)
            except _Retryable as error:
                if attempt >= self.options.retries:
                    raise FetchError(f"{error} (after {attempt + 1} attempts)") from None
                delay = error.retry_after if error.retry_after is not None else self.options.backoff_s * (2 ** attempt)
                delay = min(delay, 30.0) * (0.5 + random.random())  # jitter: retries of many rows do not align
                attempt += 1
                self.stats.retries += 1
                await asyncio.sleep(delay)

    async def _once(self, url: str) -> bytes:
        import aiohttp

        try:
            async with self._session.get(url, allow_redirects=True) as response:
                if response.status in RETRY_STATUS:
                    raise _Retryable(f"HTTP {response.status}", _retry_after(response.headers.get("Retry-After")))
                if response.status >= 400:
                    raise FetchError(f"HTTP {response.status} {response.reason or ''}".strip())
                kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if kind and not kind.startswith("image/") and kind != "application/octet-stream":
                    raise FetchError(f"not an image: content type {kind}")
                length = response.content_length
                if length is not None and length > self.options.max_bytes:
                    raise FetchError(f"too large: {length} bytes, the limit is {self.options.max_bytes}")
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > self.options.max_bytes:
                        raise FetchError(f"too large: over {self.options.max_bytes} bytes")
                    chunks.append(chunk)
                if size == 0:
                    raise FetchError("empty response body")
                return b"".join(chunks)
        except (asyncio.TimeoutError, TimeoutError):
            raise _Retryable(f"timed out after {self.options.timeout_s} s", None) from None
        except aiohttp.ClientError as error:
            raise _Retryable(f"connection failed: {type(error).__name__}: {error}"[:300], None) from None


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff
