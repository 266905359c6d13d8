#!/bin/sh
# Fill a Triton model repository volume: committed configs + python models, then the exported graphs.
#
# Environment:
#   MODEL_REPOSITORY  target directory (default /models)
#   EXPORT_ARGS       arguments of `python -m export` (default: --preset base --int8)
#   EXPORT_FORCE=1    export again even if the repository already has a manifest.json
#   EXPORT_DRY_RUN=1  print the export command instead of running it (tests)
#   CONFIG_SOURCE     committed model_repository to copy (default /opt/mmretrieval/model_repository)
#
# The configs are copied on every run, so a new image's configs replace older ones; the graphs are
# exported only once per volume (export writes all-or-nothing and keeps committed files, see
# export/writer.py), so restarting the stack does not download and convert the checkpoints again.
set -eu

OUT="${MODEL_REPOSITORY:-/models}"
SRC="${CONFIG_SOURCE:-/opt/mmretrieval/model_repository}"
ARGS="${EXPORT_ARGS:---preset base --int8}"

mkdir -p "$OUT"
cp -R "$SRC"/. "$OUT"/
# Triton needs a version directory even for ensembles; git does not keep empty ones.
for cfg in "$OUT"/*/config.pbtxt; do
  [ -f "$cfg" ] && mkdir -p "$(dirname "$cfg")/1"
done
echo "[mm-export] configs from $SRC copied into $OUT"

if [ -f "$OUT/manifest.json" ] && [ "${EXPORT_FORCE:-0}" != "1" ]; then
  echo "[mm-export] $OUT/manifest.json exists: graphs already exported (EXPORT_FORCE=1 exports again)"
  exit 0
fi

# shellcheck disable=SC2086  # EXPORT_ARGS is a list of arguments
if [ "${EXPORT_DRY_RUN:-0}" = "1" ]; then
  echo python -m export --out "$OUT" $ARGS
  exit 0
fi
exec python -m export --out "$OUT" $ARGS
