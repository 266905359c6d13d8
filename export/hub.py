"""Model-hub reachability: fail in seconds with a clear line instead of minutes of retries offline."""
from __future__ import annotations

import functools
import logging
import os
import socket
from urllib.parse import urlparse


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face endpoint accepts a TCP connection (and offline mode is not forced)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def use_cache_only_if_offline() -> bool:
    """Switch huggingface_hub to its local cache when the hub cannot be reached; returns offline-ness.

    Cached checkpoints still load; anything else fails at once (no retry loop).
    """
    offline = not hub_reachable()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    if offline:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    return offline
