"""All-or-nothing writes of a model repository: build in a temp dir, then move into place.

The manifest goes in last and is removed first, so a repository is either complete (manifest
present and matching) or visibly unfinished (no manifest); never half of one and half of another.
Committed files already in the target (Triton's config.pbtxt) are left alone.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from runtime.manifest import MANIFEST_FILE


@contextlib.contextmanager
def staged_repository(out: Path) -> Iterator[Path]:
    """Yield an empty staging dir next to `out`; on success its content replaces `out`'s artifacts."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        yield staging
        _commit(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _listed_files(manifest_path: Path) -> set[str]:
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return set()
    files = {data.get("clip", {}).get("tokenizer", {}).get("file", "")}
    if data.get("blip"):
        files.add(data["blip"].get("tokenizer", {}).get("file", ""))
    for entry in data.get("models", {}).values():
        files.add(entry["file"])
        files.update(v["file"] for v in entry.get("variants", {}).values())
    return {f for f in files if f}


def _commit(staging: Path, out: Path) -> None:
    if not (staging / MANIFEST_FILE).is_file():
        raise RuntimeError("internal error: export finished without writing its manifest")
    if not out.exists():
        os.rename(staging, out)
        staging.mkdir()  # the context manager removes it again
        return
    old_manifest = out / MANIFEST_FILE
    stale = _listed_files(old_manifest)
    if old_manifest.exists():
        old_manifest.unlink()
    for path in sorted(staging.rglob("*")):
        relative = path.relative_to(staging)
        if path.is_dir() or relative.as_posix() == MANIFEST_FILE:
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        stale.discard(relative.as_posix())
    for leftover in stale:
        (out / leftover).unlink(missing_ok=True)
    os.replace(staging / MANIFEST_FILE, old_manifest)
