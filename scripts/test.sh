#!/usr/bin/env bash
# The project's test command: sets up .venv with the pinned versions, then runs pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k export -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python -m pytest "$@"
