#!/usr/bin/env bash
# The main job, end to end on the embedded defaults: install -> export models -> sample catalog of
# real product photos -> gateway (local ONNX Runtime backend + Milvus Lite) -> index with the CLI ->
# searches -> a short load test -> stop everything. Nothing is left running (trap on EXIT).
# MM_BACKEND=triton runs the same job through a local tritonserver (the CPU rendering of the export).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
STARTED=$(date +%s)
REPO="${MM_MODEL_REPOSITORY:-$ROOT/model_repository}"

# Real product photos: Zalando Fashion-MNIST from Debian (needs root + apt); else a stated fallback.
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[run] installing the sample product photos (apt: dataset-fashion-mnist)"
    { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1 \
      || echo "[run] apt could not install dataset-fashion-mnist: using scikit-image sample photos instead"
  else
    echo "[run] no apt/root for dataset-fashion-mnist: using scikit-image sample photos instead"
  fi
fi

# Models: the real preset where the model hub is reachable. Offline, a compact CLIP fine-tuned here
# on Fashion-MNIST's training split (docs/quality.md) so that searches mean something; only where
# Fashion-MNIST is missing too, the random-weight tiny preset. MM_PRESET forces a preset.
PRESET="${MM_PRESET:-auto}"
if [ "$PRESET" = auto ] && ! python -c "import sys; from export.hub import hub_reachable; sys.exit(0 if hub_reachable() else 1)"; then
  if [ -f "$FMNIST" ]; then
    PRESET=fmnist
  else
    PRESET=tiny
    echo "[run] model hub unreachable and no Fashion-MNIST: using the offline 'tiny' preset (random weights)"
  fi
fi
if [ "$PRESET" = fmnist ]; then
  RUN_DIR="$ROOT/data/finetune-fmnist"
  MINUTES="${MM_FINETUNE_MINUTES:-5}"
  if [ -f "$RUN_DIR/final.pt" ]; then
    echo "[run] model hub unreachable: reusing the offline CLIP fine-tuned on Fashion-MNIST ($RUN_DIR/final.pt)"
  else
    echo "[run] model hub unreachable: fine-tuning the offline CLIP on Fashion-MNIST for up to $MINUTES minutes (docs/quality.md)"
    python -m quality finetune --data fashion-mnist --arch mm-fmnist-clip --epochs 10 --batch-size 256 --lr 1e-3 \
      --out "$RUN_DIR" --max-minutes "$MINUTES"
  fi
  echo "[run] exporting models into $REPO (fine-tuned CLIP, no BLIP: a random captioner would only add noise)"
  python -m export --preset tiny --clip-arch mm-fmnist-clip --clip-pretrained "$RUN_DIR/final.pt" --no-blip --out "$REPO" --int8
else
  echo "[run] exporting models into $REPO (preset $PRESET)"
  python -m export --preset "$PRESET" --out "$REPO" --int8
fi

# demo.py starts the gateway (MM_BACKEND=triton: behind a local tritonserver serving the CPU rendering
# of the export, `python -m triton_runner render`), drives the CLI and stops the gateway. It runs in the background so
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
  if [ -f "$DATA/triton.pid" ]; then  # MM_BACKEND=triton: tritonserver and its python stubs (one process group)
    kill -TERM -- "-$(cat "$DATA/triton.pid")" 2>/dev/null || true
    rm -f "$DATA/triton.pid"
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
