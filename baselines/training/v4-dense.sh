#!/usr/bin/env bash
# The v4 dense twin (baselines/training/README.md): the v4 shape (4 layers x 128) dense, from scratch, same
# tokenizer and corpus, until its validation loss is within 2% of the v4 sparse model's, alone on the machine.
#   bash baselines/training/v4-dense.sh TARGET_VAL_LOSS [STOP] [STEPS]
# STEPS (default 12,000: 49M tokens) lays out the learning-rate schedule (a plateau and a decay over the last
# tenth, as the sparse run's); the run ends at the target or at STEPS. A run that stops at STOP (or is
# interrupted) resumes from its checkpoint with the same command; commit its parts at the end of a stretch.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${1:?give the target validation loss: 1.02 x the v4 sparse model s}
STEPS=${3:-12000}
STOP=${2:-$STEPS}
OUT=baselines/training/v4-dense
RESUME=()
{ [ -f "$OUT/checkpoint.pt" ] || [ -f "$OUT/checkpoint.split.json" ]; } && RESUME=(--resume)
circuitbench train --out "$OUT" --corpus pypi --dense \
    --n-layer 4 --d-model 128 --n-head 4 --batch-size 16 --lr 0.0128 --lr-decay 0.1 --target-val-loss "$TARGET" \
    --max-steps "$STEPS" --eval-every 250 --val-windows 256 --checkpoint-every 1000 \
    --threads 2 --quiet --no-card --stop-after "$STOP" "${RESUME[@]}"
