#!/usr/bin/env bash
# Issue 13's device check: one summary table (latency: cache x CUDA graphs; training rows/s per mode;
# 4 x gpu 0.25 vs 1 x gpu 1). Needs the repository, a Python with torch (the repo's .venv if it works,
# else python3), and optionally bench/results/device_data.npz (bench/device_check.py bundle; synthetic
# data otherwise). Budget: <= 8 minutes on one GPU; every part has its own time limit, and a part that
# runs out still leaves the others' rows.
#   bash bench/device_check.sh           # GPU machine
#   bash bench/device_check.sh --quick   # CPU smoke run of every part (tiny sizes)
set -u
cd "$(dirname "$0")/.."
QUICK=""
[ "${1:-}" = "--quick" ] && QUICK="--quick"
PY=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
OUTDIR="${OUT:-/tmp/device_check}"
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
echo "device check: $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())') ; python $PY; out $OUTDIR; load $(cut -d' ' -f1-3 /proc/loadavg)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
# part  time limit (s): latency ~1 min, training ~1-2, sharing ~2-3, tests ~0.5, harness (Ray) ~2
for spec in latency:90 training:150 sharing:150 tests:60 harness:120; do
  part=${spec%%:*}; limit=${spec##*:}
  [ -n "$QUICK" ] && limit=1200  # a loaded 2-core box: the limits above are the GPU budget
  start=$(date +%s)
  timeout "$limit" $PY bench/device_check.py "$part" --out "$OUTDIR" $QUICK >"$OUTDIR/$part.log" 2>&1
  rc=$?
  echo "part $part: rc $rc in $(( $(date +%s) - start )) s (log $OUTDIR/$part.log)"
  [ $rc -ne 0 ] && tail -n 15 "$OUTDIR/$part.log"
done
$PY bench/device_check.py summary --out "$OUTDIR" $QUICK
