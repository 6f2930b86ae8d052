#!/usr/bin/env bash
# Issue 14's comparison: `small` with the discrete bottleneck (configs/discrete.yaml) against `small`
# (vae), phase 1, the dev phrases without one instrument, batch 8 x 32768, 2 threads, the same CPU
# wall-clock each, one after the other; then both scored (scripts/evaluate.py, CREPE tiny) on audio the
# runs did not see: the held-out instrument's phrases, and the dev notes (velocity 85, MIDI 60-79) of
# every instrument, the discrete model at 1, 2, 4 and 8 codebooks.
# Results: benchmarks/results/discrete_<MINUTES>min_{phrases,notes}.{json,md}
#   bash benchmarks/discrete_runs.sh [DEV_DIR] [HELD_OUT_INSTRUMENT] [MINUTES] [vae|discrete|evaluate|all]
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-../shared/data/dev}
HELD_OUT=${2:-flute}
MINUTES=${3:-20}
STAGE=${4:-all}
WORK=${WORK:-.cache/discrete}
RESULTS=benchmarks/results/discrete_${MINUTES}min
# shellcheck source=benchmarks/split_phrases.sh
source benchmarks/split_phrases.sh
split_phrases "$DEV" "$HELD_OUT" "$WORK"
unseen_notes "$DEV" "$WORK"
preprocess_once "$WORK"
train() { local name=$1; shift; train_timed "$WORK" "$MINUTES" "$name" --config configs/small.yaml "$@"; }  # NAME, args
if [ "$STAGE" = vae ] || [ "$STAGE" = all ]; then train vae; fi
if [ "$STAGE" = discrete ] || [ "$STAGE" = all ]; then train discrete --config configs/discrete.yaml; fi
if [ "$STAGE" = evaluate ] || [ "$STAGE" = all ]; then
    for set in heldout_phrases unseen_notes; do
        .venv/bin/python scripts/evaluate.py --model "$WORK/runs/discrete" --compare "$WORK/runs/vae" \
            --codebooks 1 2 4 8 --data "$WORK/$set" --crepe-model tiny --output "${RESULTS}_${set#*_}.json" --quiet
    done
fi
