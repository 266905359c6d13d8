#!/usr/bin/env bash
# The main job: install, export the models, and run the system on its embedded defaults.
# Today (foundation issue) that is: export -> ONNX Runtime embeddings of real photos and queries.
# The gateway (Milvus Lite), Triton and the client CLI extend this script as they land.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
REPO="${MM_MODEL_REPOSITORY:-$ROOT/model_repository}"
echo "[run] exporting models into $REPO (preset ${MM_PRESET:-auto})"
python -m export --preset "${MM_PRESET:-auto}" --out "$REPO" --int8
echo "[run] embedding real photos and text queries"
python scripts/demo.py "$REPO"
echo "[run] done; nothing left running"
