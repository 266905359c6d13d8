"""Image URLs in catalogs: client.fetch against a real HTTP server on 127.0.0.1, and `mmsearch index` end to end."""
from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.catalog import read_catalog
from client.fetch import FetchError, FetchOptions, ImageFetcher
from client_fixtures import client_gateway, run_cli  # noqa: F401


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class Shop(BaseHTTPRequestHandler):
    """Routes: /img/N.png, /slow, /flaky/KEY (503 twice, then the image), /big (Content-Length over the cap),
    /stream-big (no length, body over the cap), /page.html (text/html), /gone (404). Counts hits per path."""

    hits: dict[str, int] = {}
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, kind: str = "image/png", length: bool = True) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with Shop.lock:
            Shop.hits[self.path] = Shop.hits.get(self.path, 0) + 1
            count = Shop.hits[self.path]
            Shop.in_flight += 1
            Shop.max_in_flight = max(Shop.max_in_flight, Shop.in_flight)
        try:
            if self.path.startswith("/img/"):
                time.sleep(0.05)  # so concurrent downloads overlap
                self._send(200, _png(int(Path(self.path).stem)))
            elif self.path == "/slow":
                time.sleep(2.0)
                self._send(200, _png(1))
            elif self.path.startswith("/flaky/"):
                if count <= 2:
                    self._send(503, b"busy", "text/plain")
                else:
                    self._send(200, _png(2))
            elif self.path == "/big":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(50_000_000))
                self.end_headers()
            elif self.path == "/stream-big":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"x" * 65536
                for _ in range(40):  # 2.6 MB, over a 1 MB cap
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            elif self.path == "/page.html":
                self._send(200, b"<html>not an image</html>", "text/html; charset=utf-8")
            else:
                self._send(404, b"no such product", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with Shop.lock:
                Shop.in_flight -= 1


@pytest.fixture(scope="module")
def shop():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fetch_all(urls, options: FetchOptions):
    async def main():
        async with ImageFetcher(options) as fetcher:
            results = await asyncio.gather(*(fetcher.fetch(u) for u in urls), return_exceptions=True)
            return results, fetcher.stats

    return asyncio.run(main())


def test_fetch_bounds_concurrency_and_caches(shop, tmp_path):
    Shop.max_in_flight = 0
    urls = [f"{shop}/img/{i}.png" for i in range(12)]
    options = FetchOptions(concurrency=8, per_host=3, cache_dir=tmp_path / "cache")
    results, stats = _fetch_all(urls, options)
    assert all(r == _png(i) for i, r in enumerate(results))
    assert Shop.max_in_flight <= 3  # one host: the per-host limit holds
    assert stats.fetched == 12 and stats.cache_hits == 0
    hits_before = sum(Shop.hits.get(f"/img/{i}.png", 0) for i in range(12))
    again, stats = _fetch_all(urls, options)
    assert again == results and stats.cache_hits == 12 and stats.fetched == 0
    assert sum(Shop.hits.get(f"/img/{i}.png", 0) for i in range(12)) == hits_before  # no network the second time


def test_fetch_failures_say_why_and_only_transient_ones_are_retried(shop):
    options = FetchOptions(timeout_s=0.5, retries=2, backoff_s=0.01, max_bytes=1_000_000)
    urls = {name: f"{shop}{name}" for name in ("/slow", "/flaky/a", "/big", "/stream-big", "/page.html", "/gone")}
    results, stats = _fetch_all(list(urls.values()), options)
    got = dict(zip(urls, results))
    assert got["/flaky/a"] == _png(2) and Shop.hits["/flaky/a"] == 3  # two 503s retried, then served
    assert isinstance(got["/slow"], FetchError) and "timed out" in str(got["/slow"]) and "after 3 attempts" in str(got["/slow"])
    assert isinstance(got["/big"], FetchError) and "too large: 50000000 bytes" in str(got["/big"])
    assert isinstance(got["/stream-big"], FetchError) and "too large" in str(got["/stream-big"])
    assert isinstance(got["/page.html"], FetchError) and "content type text/html" in str(got["/page.html"])
    assert isinstance(got["/gone"], FetchError) and "HTTP 404" in str(got["/gone"])
    assert Shop.hits["/gone"] == 1 and Shop.hits["/page.html"] == 1  # permanent failures are not retried
    assert stats.failed == 5 and stats.retries >= 4


def test_catalog_rows_with_urls(tmp_path):
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("\n".join(json.dumps(r) for r in [
        {"image_url": "https://shop.example/p/red-shirt.jpg?size=l", "title": "red shirt"},
        {"id": "x", "image_url": "ftp://shop.example/a.jpg"},
        {"id": "y"},
    ]) + "\n")
    ok, bad_scheme, none = list(read_catalog(catalog))
    assert ok.error is None and ok.id == "red-shirt" and ok.image_url.startswith("https://") and ok.image_path is None
    assert ok.fields["image_uri"] == ok.image_url
    assert "http(s) URL" in bad_scheme.error and "image_url" in none.error


def test_index_catalog_with_image_urls(client_gateway, shop, tmp_path):  # noqa: F811
    rows = [{"id": f"url-{i}", "image_url": f"{shop}/img/{100 + i}.png", "title": f"web product {i}"} for i in range(6)]
    rows += [{"id": "url-gone", "image_url": f"{shop}/gone"}, {"id": "url-html", "image_url": f"{shop}/page.html"},
             {"id": "url-big", "image_url": f"{shop}/big"}, {"id": "url-flaky", "image_url": f"{shop}/flaky/index"}]
    catalog = tmp_path / "web.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["index", str(catalog), "--json", "--batch-size", "4", "--fetch-timeout", "2", "--max-image-bytes", "1000000"]
    result = run_cli(*args, address=client_gateway.address)
    summary = json.loads(result.stdout)
    assert summary["ok"] == 7 and summary["failed"] == 3, summary
    assert summary["image_urls"]["fetched"] == 7 and summary["image_urls"]["failed"] == 3
    failed = {json.loads(line)["id"]: json.loads(line)["reason"] for line in Path(summary["failed_file"]).read_text().splitlines()}
    assert "HTTP 404" in failed["url-gone"] and "text/html" in failed["url-html"] and "too large" in failed["url-big"]
    found = run_cli("get", "url-3", "--json", address=client_gateway.address)
    assert rows[3]["image_url"] in found.stdout  # image_uri defaults to the URL
    again = json.loads(run_cli(*args, "--restart", address=client_gateway.address).stdout)
    assert again["ok"] == 7 and again["image_urls"]["cache_hits"] == 7 and again["image_urls"]["fetched"] == 0
