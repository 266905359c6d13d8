#!/usr/bin/env bash
# The clip-retrieval peer in its own virtual environment (nothing of it is committed):
#   benchmarks/peer/setup_venv.sh [/work/peer-venv]
# torch first, pinned, so pip keeps the CPU wheel instead of pulling a CUDA build.
set -euo pipefail
VENV=${1:-${MM_PEER_VENV:-/work/peer-venv}}
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
CONSTRAINTS=$(mktemp)
printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$CONSTRAINTS"
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" clip-retrieval==2.45.0
"$VENV/bin/pip" install -q setuptools==80.9.0   # its `clip` dependency imports pkg_resources (gone in setuptools 81)
rm -f "$CONSTRAINTS"
"$VENV/bin/python" -c "import clip_retrieval, faiss, open_clip; print('peer venv ready:', '$VENV')"
