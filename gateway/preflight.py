"""Checks before the gateway starts: what would otherwise fail later, retried forever or as a traceback.

Each failure is one StartupError whose message says what to change; `python -m gateway` prints it
as one line and exits with code 2 (a supervisor then sees a configuration error, not a crash loop
of tracebacks). Checked: the API key file parses, the TLS files are readable PEM, and for a local
Milvus Lite file: its directory is writable and no other process holds the file (Milvus Lite
allows one process per file, and a second open would even delete the first one's lock file).
"""
from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from pathlib import Path

from gateway.auth import KeyFileError, KeyRing
from gateway.settings import Settings

# Milvus Lite's own rules for the file name (milvus_lite/server.py).
_DB_NAME = re.compile(r"^[a-zA-Z0-9.\-_]+$")
_DB_NAME_MAX = 36


class StartupError(RuntimeError):
    """The gateway cannot start with these settings; the message says why (exit code 2)."""


def check(settings: Settings) -> KeyRing:
    """Raise StartupError on the first problem; returns the parsed key ring."""
    try:
        ring = KeyRing.from_settings(settings)
    except KeyFileError as exc:
        raise StartupError(str(exc)) from None
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(settings, name)
        if path is not None:
            _check_pem(Path(path), name)
    if "://" not in settings.store_uri:  # a Milvus Lite file (else a Milvus server URI)
        check_store_file(Path(settings.store_uri), wait_s=settings.store_timeout_s)
    return ring


def _check_pem(path: Path, setting: str) -> None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StartupError(f"{setting} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise StartupError(f"{setting} {path} is not a PEM file")


def check_store_file(db: Path, wait_s: float = 10.0) -> None:
    """The Milvus Lite file can be created or opened by this process alone.

    A busy lock is retried for `wait_s`: after a SIGKILL, the killed gateway's Milvus Lite child
    holds the lock until it notices its parent is gone (a few seconds).
    """
    db = db.absolute()
    if not _DB_NAME.match(db.name) or len(db.name) > _DB_NAME_MAX:
        raise StartupError(f"store_uri {db}: Milvus Lite needs a file name of at most {_DB_NAME_MAX} characters from letters, digits and .-_")
    directory = db.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"store directory {directory} cannot be created: {exc.strerror}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".mm-write-check-"):
            pass
    except OSError as exc:
        raise StartupError(f"store directory {directory} is not writable: {exc.strerror}") from None
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise StartupError(f"store file {db} is not readable and writable by this user")
    lock_path = directory / f".{db.name}.lock"  # the lock Milvus Lite takes (fcntl.lockf) while a process has the file open
    deadline = time.monotonic() + wait_s
    with open(lock_path, "a") as lock:
        while True:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"store file {db} is in use by another process (lock {lock_path}); stop it or use another store_uri"
                    ) from None
                time.sleep(0.25)
        fcntl.lockf(lock, fcntl.LOCK_UN)
