#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the pinned set.
# Sourced by scripts/test.sh and scripts/run.sh; safe to run again.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

STAMP="$VENV/.mm-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing pinned dependencies (constraints.txt) into $VENV"
  python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  # torch first, on its own: the pin selects the CPU wheel; the project extras then see it installed.
  python -m pip install -q -c "$ROOT/constraints.txt" torch 2>&1 | grep -v "is ignored" || true
  python -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[export,serving,triton-cpu,openvino,plot,test]" 2>&1 | grep -v "is ignored" || true
  python -c "from export.torch_compat import import_open_clip; import_open_clip(); import transformers, onnxruntime, tokenizers, pymilvus, tritonclient.grpc" \
    || { echo "[setup] install failed: see pip output above" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
