#!/usr/bin/env bash
# One stretch of the v3 long run (baselines/training/README.md): train until step STOP, alone on the machine.
#   bash baselines/training/stretch.sh STOP
# The first stretch creates baselines/training/v3-sparse/checkpoint.pt; every later one resumes it exactly.
set -euo pipefail
cd "$(dirname "$0")/../.."
STOP=${1:?give the step to stop at, e.g. 6000}
OUT=baselines/training/v3-sparse
RESUME=()
[ -f "$OUT/checkpoint.pt" ] && RESUME=(--resume)
circuitbench train --out "$OUT" --corpus pypi --init-from baselines/models/tiny-sparse --anneal-end 0 \
    --n-layer 2 --d-model 128 --n-head 4 --batch-size 16 --weight-density 0.125 --afrac 0.25 --lr 0.0128 \
    --max-steps 22000 --eval-every 1000 --val-windows 256 --checkpoint-every 1000 --keep-checkpoints \
    --threads 2 --quiet --no-card --stop-after "$STOP" "${RESUME[@]}"
