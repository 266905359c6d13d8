"""The state file that lets an interrupted `index` resume: ids the gateway acknowledged as stored.

Append-only JSONL, flushed after every batch: a header line (format, target address) then one
{"id", "fp"} line per acknowledged row. A restarted `index` skips rows whose id *and* fingerprint
are here, so nothing is sent twice; a changed row is sent again (upserts replace by id, so the
store never holds duplicates either way). A torn last line (killed mid-write) is ignored.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Iterable

FORMAT = "mmsearch-index-state/1"


def default_state_path(catalog: Path) -> Path:
    """Next to the catalog: catalog.jsonl -> catalog.jsonl.index-state; folder/ -> folder/.index-state."""
    catalog = Path(catalog)
    return catalog / ".index-state" if catalog.is_dir() else catalog.with_name(catalog.name + ".index-state")


class ResumeState:
    """Acknowledged rows of one catalog for one target gateway."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = Path(path)
        self.target = target
        self.done: dict[str, str] = {}
        self.note = ""
        self._handle: IO[str] | None = None

    def load(self) -> "ResumeState":
        if not self.path.exists():
            return self
        lines = self.path.read_text(encoding="utf-8").splitlines()
        header = _parse(lines[0]) if lines else None
        if not header or header.get("format") != FORMAT:
            self.note = f"ignoring {self.path}: not a state file of this version"
            return self
        if header.get("target") != self.target:
            self.note = f"ignoring {self.path}: it was written for {header.get('target')}, not {self.target}"
            return self
        for line in lines[1:]:
            entry = _parse(line)
            if entry and "id" in entry:
                self.done[entry["id"]] = entry.get("fp", "")
        return self

    def is_done(self, product_id: str, fingerprint: str) -> bool:
        return self.done.get(product_id) == fingerprint

    def reset(self) -> None:
        """Forget everything (index --restart)."""
        self.done.clear()
        if self.path.exists():
            self.path.unlink()

    def record(self, entries: Iterable[tuple[str, str]]) -> None:
        """Append acknowledged (id, fingerprint) pairs and flush them to disk."""
        entries = list(entries)
        if not entries:
            return
        if self._handle is None:
            fresh = not self.path.exists() or not self.done
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w" if fresh else "a", encoding="utf-8")
            if fresh:
                self._handle.write(json.dumps({"format": FORMAT, "target": self.target}) + "\n")
        for product_id, fingerprint in entries:
            self._handle.write(json.dumps({"id": product_id, "fp": fingerprint}) + "\n")
            self.done[product_id] = fingerprint
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _parse(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
