#!/usr/bin/env bash
# The lent GPU's one command, and its CPU dry run (benchmarks/results/README.md); the logic is gpu_check.py.
#   benchmarks/gpu_check.sh               # on the GPU machine: python3 there holds torch; results in $OUT
#   benchmarks/gpu_check.sh --dry-run     # here: PYTHON (default .venv/bin/python) lends its packages to the stand-in
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ " $* " == *" --dry-run "* && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
fi
exec "$PYTHON" -u benchmarks/gpu_check.py "$@"
