#!/usr/bin/env bash
# One stretch of the v4 long run (BENCHMARKS.md, "Reference models v4, step 2"): the 4 x 128 probe continued,
# L0 and AbsTopK held at the targets, a long plateau at the peak learning rate and a decay over the last tenth,
# alone on the machine.
#   bash baselines/training/v4.sh STOP
# The first stretch creates baselines/training/v4-sparse/; every later one resumes its checkpoint exactly. Commit
# the checkpoint's parts (checkpoint.split.json, checkpoint-split-STEP/) at the end of every stretch. A run stopped
# on the plateau is finished by `--resume --finish` and a short decay of its own (README, "Schedule").
set -euo pipefail
cd "$(dirname "$0")/../.."
STOP=${1:?give the step to stop at, e.g. 15000}
OUT=baselines/training/v4-sparse
RESUME=()
{ [ -f "$OUT/checkpoint.pt" ] || [ -f "$OUT/checkpoint.split.json" ]; } && RESUME=(--resume)
circuitbench train --out "$OUT" --corpus pypi --init-from baselines/training/v4-probe-4x128 --anneal-end 0 \
    --n-layer 4 --d-model 128 --n-head 4 --batch-size 16 --weight-density 0.125 --afrac 0.25 --lr 0.0128 \
    --max-steps 60000 --lr-decay 0.1 --eval-every 2500 --val-windows 256 --checkpoint-every 1000 \
    --keep-checkpoints --threads 2 --quiet --no-card --stop-after "$STOP" "${RESUME[@]}"
