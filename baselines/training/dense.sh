#!/usr/bin/env bash
# The v3 dense twin (baselines/training/README.md): today's dense twin continued, same tokenizer and shape,
# until its validation loss is within 2% of the v3 sparse model's, alone on the machine.
#   bash baselines/training/dense.sh TARGET_VAL_LOSS [STOP] [STEPS]
# STEPS (default 8,000, 33M tokens) sets the learning-rate schedule; the run ends at the target or at STEPS.
# A run that stops at STOP (or is interrupted) resumes from its checkpoint with the same command.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${1:?give the target validation loss, e.g. 1.02 x the sparse model val loss}
STEPS=${3:-8000}
STOP=${2:-$STEPS}
OUT=baselines/training/v3-dense
RESUME=()
{ [ -f "$OUT/checkpoint.pt" ] || [ -f "$OUT/checkpoint.split.json" ]; } && RESUME=(--resume)
circuitbench train --out "$OUT" --corpus pypi --init-from baselines/models/tiny-dense --dense \
    --n-layer 2 --d-model 128 --n-head 4 --batch-size 16 --lr 0.0128 --target-val-loss "$TARGET" \
    --max-steps "$STEPS" --eval-every 250 --val-windows 256 --checkpoint-every 500 \
    --threads 2 --quiet --no-card --stop-after "$STOP" "${RESUME[@]}"
