"""`python -m gateway [flags]`: run the gRPC gateway (see `--help`; every flag also reads MM_*)."""
from __future__ import annotations

import asyncio
import logging
import sys

from gateway.server import serve
from gateway.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pymilvus", "tritonclient"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
