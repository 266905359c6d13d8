#!/usr/bin/env bash
# Regenerate the committed Python stubs of protos/ into the top-level package retrieval/.
# Usage: scripts/gen_protos.sh [OUT_DIR]   (default: the repository root; tests pass a tmp dir)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
cd "$ROOT"
"$PYTHON" -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" \
  protos/retrieval/v1/retrieval.proto
# Packages (protoc writes modules only)
for pkg in retrieval retrieval/v1; do
  [ -f "$OUT/$pkg/__init__.py" ] || printf '"""Generated gRPC stubs of protos/%s (scripts/gen_protos.sh)."""\n' "$pkg" > "$OUT/$pkg/__init__.py"
done
