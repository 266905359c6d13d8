"""Catalog readers: JSONL, CSV or a folder of images -> rows that become retrieval.v1 Products.

A row keeps the line it came from and a fingerprint of its content (the row's fields plus the
image file's size and mtime), so `index` can skip rows already acknowledged without reading their
images, and re-send a row whose content changed. Image paths are relative to the catalog file.

Recognized fields (JSONL keys or CSV columns): id (or sku / product_id; default: the image file
name), image (or image_path / path / file), or image_url (http/https: fetched by `index`, see
client/fetch.py), title, description, price, category, brand, in_stock, tags (a list, or a
string split on "|" or ","), image_uri (default: the image_url), attributes (an object, or a JSON
string in CSV). Any other field becomes an attribute (string value).
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from retrieval.v1 import retrieval_pb2 as pb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
ID_KEYS = ("id", "sku", "product_id")
IMAGE_KEYS = ("image", "image_path", "path", "file")
URL_KEY = "image_url"
KNOWN = {*ID_KEYS, *IMAGE_KEYS, URL_KEY, "title", "description", "price", "category", "brand", "in_stock", "tags", "image_uri", "attributes"}
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]+")


class CatalogError(ValueError):
    """The catalog itself cannot be read (missing file, unknown format)."""


@dataclass
class CatalogRow:
    """One product of the catalog; `error` is set when the row cannot become a Product."""

    line: int  # 1-based line (JSONL), row (CSV, header excluded) or file number (folder)
    raw: dict[str, Any]
    id: str = ""
    image_path: Path | None = None
    image_url: str | None = None  # set instead of image_path: the indexer fetches it
    fingerprint: str = ""
    error: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def product(self, image: bytes | None = None) -> pb.Product:
        """Builds the message with `image` (fetched bytes) or the image file read here (raises OSError /
        ValueError with a readable reason)."""
        if self.error:
            raise ValueError(self.error)
        if image is None:
            if self.image_path is None:
                raise ValueError("the row's image_url was not fetched")
            image = self.image_path.read_bytes()
        return pb.Product(id=self.id, image=image, **self.fields)


def _fingerprint(raw: dict[str, Any], image: Path | None) -> str:
    digest = hashlib.sha1(json.dumps(raw, sort_keys=True, default=str).encode())
    if image is not None:
        try:
            stat = image.stat()
            digest.update(f"|{stat.st_size}|{stat.st_mtime_ns}".encode())
        except OSError:
            digest.update(b"|missing")
    return digest.hexdigest()[:16]


def safe_id(text: str) -> str:
    """A product id the gateway accepts, from a file name or path."""
    return _ID_UNSAFE.sub("-", text).strip("-")[:128] or "item"


def _split_tags(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    sep = "|" if "|" in str(value) else ","
    return [t.strip() for t in str(value).split(sep) if t.strip()]


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "y", "t"}:
        return True
    if text in {"0", "false", "no", "n", "f"}:
        return False
    raise ValueError(f"in_stock must be true/false, got {value!r}")


def _parse_price(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lstrip("$€£").replace(",", "")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"price is not a number: {value!r}") from None


def row_from_mapping(raw: dict[str, Any], line: int, base: Path) -> CatalogRow:
    """Normalize one record; problems become `row.error` (the row is reported, not fatal)."""
    row = CatalogRow(line=line, raw=raw)
    try:
        image_value = next((raw[k] for k in IMAGE_KEYS if raw.get(k)), None)
        url_value = raw.get(URL_KEY) or None
        if not image_value and not url_value:
            raise ValueError("no image: give a file path (field 'image') or an http(s) URL (field 'image_url')")
        if image_value:
            image = Path(str(image_value)).expanduser()
            row.image_path = image if image.is_absolute() else base / image
        else:
            from client.fetch import check_url

            row.image_url = check_url(str(url_value))
        given_id = next((str(raw[k]).strip() for k in ID_KEYS if raw.get(k) not in (None, "")), "")
        name = Path(str(image_value)).stem if image_value else Path(urlsplit(row.image_url).path).stem
        row.id = given_id or safe_id(name)
        attributes = raw.get("attributes") or {}
        if isinstance(attributes, str):
            attributes = json.loads(attributes) if attributes.strip() else {}
        if not isinstance(attributes, dict):
            raise ValueError("attributes must be an object")
        attributes = {str(k): str(v) for k, v in attributes.items()}
        for key, value in raw.items():
            if key not in KNOWN and value not in (None, ""):
                attributes[str(key)] = value if isinstance(value, str) else json.dumps(value)
        fields: dict[str, Any] = {
            "title": str(raw.get("title") or ""),
            "description": str(raw.get("description") or ""),
            "category": str(raw.get("category") or ""),
            "brand": str(raw.get("brand") or ""),
            "image_uri": str(raw.get("image_uri") or row.image_url or ""),
            "tags": _split_tags(raw.get("tags")),
            "attributes": attributes,
        }
        price = _parse_price(raw.get("price"))
        if price is not None:
            fields["price"] = price
        if raw.get("in_stock") not in (None, ""):
            fields["in_stock"] = _parse_bool(raw["in_stock"])
        row.fields = fields
        if row.image_path is not None and not row.image_path.is_file():
            raise ValueError(f"image file not found: {row.image_path}")
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        row.error = str(error)
    row.fingerprint = _fingerprint(raw, row.image_path)
    return row


def _read_jsonl(path: Path) -> Iterator[CatalogRow]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("a JSONL line must be an object")
            except ValueError as error:
                yield CatalogRow(line=line_no, raw={"_text": line.rstrip("\n")[:500]}, error=f"bad JSON: {error}")
                continue
            yield row_from_mapping(raw, line_no, path.parent)


def _read_csv(path: Path) -> Iterator[CatalogRow]:
    with path.open(encoding="utf-8", newline="") as handle:
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
        for row_no, raw in enumerate(csv.DictReader(handle, dialect=dialect), start=1):
            raw = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k}
            yield row_from_mapping(raw, row_no, path.parent)


def _read_folder(path: Path) -> Iterator[CatalogRow]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for number, image in enumerate(files, start=1):
        relative = image.relative_to(path)
        raw: dict[str, Any] = {
            "id": safe_id(relative.with_suffix("").as_posix()),
            "image": relative.as_posix(),
            "title": re.sub(r"[_\-]+", " ", image.stem).strip(),
        }
        if len(relative.parts) > 1:
            raw["category"] = relative.parts[0]
        yield row_from_mapping(raw, number, path)


def catalog_kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    raise CatalogError(f"{path}: unknown catalog format (use .jsonl, .csv or a folder of images)")


def read_catalog(path: str | Path) -> Iterator[CatalogRow]:
    """Rows of a JSONL / CSV catalog or an image folder, lazily, in file order."""
    path = Path(path)
    if not path.exists():
        raise CatalogError(f"{path}: no such file or folder")
    kind = catalog_kind(path)
    return {"jsonl": _read_jsonl, "csv": _read_csv, "folder": _read_folder}[kind](path)


def count_rows(path: str | Path) -> int:
    """Rows in the catalog (for the progress bar's total and ETA), without reading images."""
    path = Path(path)
    kind = catalog_kind(path)
    if kind == "folder":
        return sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if kind == "jsonl":
        with path.open(encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))
