"""`python -m gateway [flags]`: run the gRPC gateway (see `--help`; every flag also reads MM_*)."""
from __future__ import annotations

import asyncio
import logging
import sys

from pydantic import ValidationError

from gateway.preflight import StartupError, check
from gateway.server import serve
from gateway.settings import load_settings

EXIT_CONFIG = 2  # the settings or the environment are wrong: restarting will not help


def _config_error(message: str) -> int:
    print(f"gateway: cannot start: {message}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        return _config_error(errors)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pymilvus", "tritonclient"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        ring = check(settings)
    except StartupError as exc:
        return _config_error(str(exc))
    try:
        asyncio.run(serve(settings, ring))
    except StartupError as exc:
        return _config_error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
