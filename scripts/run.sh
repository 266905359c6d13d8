#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: install -> export models -> sample catalog of
# real product photos -> gateway (local ONNX Runtime backend + Milvus Lite) -> index with the CLI ->
# searches -> a short load test -> stop everything. Nothing is left running (trap on EXIT).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
STARTED=$(date +%s)
REPO="${MM_MODEL_REPOSITORY:-$ROOT/model_repository}"

echo "[run] exporting models into $REPO (preset ${MM_PRESET:-auto}: the real one where the model hub is reachable)"
python -m export --preset "${MM_PRESET:-auto}" --out "$REPO" --int8

# Real product photos: Zalando Fashion-MNIST from Debian (needs root + apt); else a stated fallback.
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[run] installing the sample product photos (apt: dataset-fashion-mnist)"
    { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1 \
      || echo "[run] apt could not install dataset-fashion-mnist: using scikit-image sample photos instead"
  else
    echo "[run] no apt/root for dataset-fashion-mnist: using scikit-image sample photos instead"
  fi
fi

# demo.py starts the gateway, drives the CLI and stops the gateway. It runs in the background so
# that this script can forward Ctrl-C / SIGTERM to it (background jobs of a script ignore SIGINT);
# the EXIT trap also stops a gateway whose demo.py died without cleaning up.
DATA="${MM_DATA_DIR:-$ROOT/data/main_job}"
DEMO=""
cleanup() {
  if [ -n "$DEMO" ] && kill -0 "$DEMO" 2>/dev/null; then
    kill -TERM "$DEMO" 2>/dev/null || true
    wait "$DEMO" 2>/dev/null || true
  fi
  if [ -f "$DATA/gateway.pid" ]; then
    kill "$(cat "$DATA/gateway.pid")" 2>/dev/null || true
    rm -f "$DATA/gateway.pid"
  fi
}
trap cleanup EXIT
trap 'echo "[run] interrupted: stopping"; exit 130' INT TERM
python scripts/demo.py --model-repository "$REPO" --data "$DATA" &
DEMO=$!
STATUS=0
wait "$DEMO" || STATUS=$?
echo "[run] main job finished in $(( $(date +%s) - STARTED ))s (exit $STATUS); nothing left running"
exit $STATUS
