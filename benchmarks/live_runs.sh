#!/usr/bin/env bash
# Issue 12's comparison: `configs/live.yaml` (4.7 ms) against `configs/small.yaml` (shipped, 96.5 ms),
# phase 1, the dev phrases without one instrument, batch 8 x 32768, 2 threads, the same CPU wall-clock
# each, one after the other; then both scored (scripts/evaluate.py, CREPE tiny) on audio the runs did
# not see: the held-out instrument's phrases, and the dev notes (velocity 85, MIDI 60-79).
# Results: benchmarks/results/live_<MINUTES>min_{phrases,notes}.{json,md}
#   bash benchmarks/live_runs.sh [DEV_DIR] [HELD_OUT_INSTRUMENT] [MINUTES] [live|small|evaluate|all]
# ALSO="RUN..." scores more runs beside them (README's table: ALSO=.cache/live/runs/live_r222, the
# three-rate design trained before the config changed).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-../shared/data/dev}
HELD_OUT=${2:-flute}
MINUTES=${3:-20}
STAGE=${4:-all}
WORK=${WORK:-.cache/live}
RESULTS=benchmarks/results/live_${MINUTES}min
# shellcheck source=benchmarks/split_phrases.sh
source benchmarks/split_phrases.sh
split_phrases "$DEV" "$HELD_OUT" "$WORK"
unseen_notes "$DEV" "$WORK"
preprocess_once "$WORK"
train() { train_timed "$WORK" "$MINUTES" "$1" --config "configs/$1.yaml"; }  # NAME (= config name)
if [ "$STAGE" = live ] || [ "$STAGE" = all ]; then train live; fi
if [ "$STAGE" = small ] || [ "$STAGE" = all ]; then train small; fi
if [ "$STAGE" = evaluate ] || [ "$STAGE" = all ]; then
    for set in heldout_phrases unseen_notes; do
        .venv/bin/python scripts/evaluate.py --model "$WORK/runs/live" --compare ${ALSO:-} "$WORK/runs/small" \
            --data "$WORK/$set" --crepe-model tiny --output "${RESULTS}_${set#*_}.json" --quiet
    done
fi
