#!/usr/bin/env bash
# Start tritonserver (GPU image) on the exported model repository.
#
# Models are loaded explicitly (--model-control-mode=explicit, one --load-model per model) because the
# exported repository also holds `tokenizers/` and `manifest.json` at its root (the python models read
# them from there): with Triton's default mode `tokenizers/` would be taken for a model, fail to load,
# and stop the server. Loaded: every directory with a config.pbtxt whose version 1 has a model file,
# and every ensemble; a graph that was not exported (e.g. blip_* after `--no-blip`) is skipped.
#
# Environment: MODEL_REPOSITORY (default /models), TRT_CACHE (default /opt/tritonserver/trt_cache,
# the path in the committed configs), TRITON_DRY_RUN=1 prints the command instead of running it.
# Extra arguments are passed to tritonserver (e.g. --log-verbose=1).
set -euo pipefail

REPO="${MODEL_REPOSITORY:-/models}"
TRT_CACHE="${TRT_CACHE:-/opt/tritonserver/trt_cache}"

if [ ! -f "$REPO/manifest.json" ]; then
  echo "[mm-triton] $REPO/manifest.json not found: run the export step first (compose service 'export', Job 'model-export')" >&2
  exit 1
fi

models=()
for cfg in "$REPO"/*/config.pbtxt; do
  [ -f "$cfg" ] || continue
  dir="$(dirname "$cfg")"
  name="$(basename "$dir")"
  if grep -Eq '^[[:space:]]*platform:[[:space:]]*"ensemble"' "$cfg" || compgen -G "$dir/1/model.*" >/dev/null; then
    models+=("$name")
    # TensorRT engine cache of the graph models (onnxruntime TensorRT EP; a volume keeps it across restarts)
    [ "${TRITON_DRY_RUN:-0}" = "1" ] || mkdir -p "$TRT_CACHE/$name"
  else
    echo "[mm-triton] skipping $name: nothing exported in $dir/1" >&2
  fi
done
if [ "${#models[@]}" -eq 0 ]; then
  echo "[mm-triton] no loadable model in $REPO" >&2
  exit 1
fi

args=(
  "--model-repository=$REPO"
  "--model-control-mode=explicit"
  "--http-port=8000" "--grpc-port=8001" "--metrics-port=8002"
  "--strict-readiness=true"      # /v2/health/ready only when every loaded model is ready
  "--exit-timeout-secs=30"       # drain in-flight requests on SIGTERM (Kubernetes grace period is longer)
)
for model in "${models[@]}"; do
  args+=("--load-model=$model")
done

if [ "${TRITON_DRY_RUN:-0}" = "1" ]; then
  printf '%s\n' tritonserver "${args[@]}" "$@"
  exit 0
fi
exec tritonserver "${args[@]}" "$@"
