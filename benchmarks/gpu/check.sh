#!/usr/bin/env bash
# The prepared device check (run on the GPU machine from the repository root, with .whl carried):
#   OUT=/some/dir bash benchmarks/gpu/check.sh            # at most 360 s on an H100 or H200 (budgets: check.py)
#   OUT=/some/dir bash benchmarks/gpu/check.sh --dry-run  # on a CPU machine: lists the phases and budgets
# PYTHON selects the interpreter (default python3, the one holding torch on the GPU machine).
# Writes $OUT/gpu_report.json (every section: run, failed or skipped, with its figures) and $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:?set OUT to the folder for the report}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
args=()
if [[ "${1:-}" == "--dry-run" ]]; then
  args+=(--dry-run)
elif compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu/check.py --out "$OUT" "${args[@]}" 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
