#!/usr/bin/env bash
# Issue 11's comparison: rave_ddsp `small` against the official RAVE v2_small (its own venv, its own
# training_step), phase 1, the same dev phrases without one instrument, batch 8 x 32768, 2 threads,
# the same wall-clock each, one after the other; then both scored on the held-out instrument's phrases
# and notes (scripts/evaluate.py, CREPE tiny). Results: benchmarks/results/noise_branch_<HELD_OUT>_<MINUTES>min[_TAG]_*
#   bash benchmarks/noise_branch_runs.sh [DEV_DIR] [HELD_OUT_INSTRUMENT] [MINUTES] [ours|rave|evaluate|all]
# Ours starts the noise branch at -50 dB and trains with OURS_ARGS (default "--model.noise_loss
# expected") as run NAME (default small); the ablation in the README:
#   NAME=drawn OURS_ARGS="--model.noise_loss drawn --trainer.max_steps 1807" ... 60 ours
# The evaluation scores run NAME first, then the runs named in ABLATIONS (e.g. ABLATIONS="drawn"), then RAVE.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=${1:-../shared/data/dev}
HELD_OUT=${2:-flute}
MINUTES=${3:-20}
STAGE=${4:-all}
NAME=${NAME:-small}
WORK=${WORK:-.cache/noise}
RESULTS=benchmarks/results/noise_branch_${HELD_OUT}_${MINUTES}min${TAG:+_$TAG}
# shellcheck source=benchmarks/split_phrases.sh
source benchmarks/split_phrases.sh
split_phrases "$DEV" "$HELD_OUT" "$WORK"
mkdir -p "$WORK/heldout_notes"
for f in "$DEV"/notes/"$HELD_OUT"_*_085.flac; do ln -sf "$(realpath "$f")" "$WORK/heldout_notes/"; done
if [ "$STAGE" = ours ] || [ "$STAGE" = all ]; then
    .venv/bin/python scripts/preprocess.py "$WORK/train" --output "$WORK/db" --overwrite --quiet
    # shellcheck disable=SC2086
    train_timed "$WORK" "$MINUTES" "$NAME" --config configs/small.yaml \
        --model.noise_initial_gain_db -50 ${OURS_ARGS:---model.noise_loss expected}
fi
if [ "$STAGE" = rave ] || [ "$STAGE" = all ]; then
    rm -rf "$WORK/rave_v2_small"
    .cache/rave-venv/bin/python -m benchmarks.train_rave_baseline --data "$WORK/train" --minutes "$MINUTES" \
        --output "$WORK/rave_v2_small" --config v2_small --batch 8 --n-signal 32768 --threads 2
fi
if [ "$STAGE" = evaluate ] || [ "$STAGE" = all ]; then
    # run NAME first, then the ablation runs named in ABLATIONS (run names under runs/), then RAVE
    others=""
    for name in ${ABLATIONS:-}; do others="$others $WORK/runs/$name"; done
    for set in phrases notes; do
        # shellcheck disable=SC2086
        .venv/bin/python scripts/evaluate.py --model "$WORK/runs/$NAME" --compare $others \
            "$WORK/rave_v2_small/rave.ts" --data "$WORK/heldout_$set" --crepe-model tiny \
            --output "${RESULTS}_$set.json" --quiet
    done
    # what each branch carries, with spectrograms of the first phrase and the sixth note (mid-register)
    figure_note=$(find "$WORK/heldout_notes" -name '*.flac' | sort | sed -n 6p)
    # shellcheck disable=SC2086
    .venv/bin/python -m benchmarks.noise_branch_report --models "$WORK/runs/$NAME" $others \
        --data "$WORK/heldout_phrases" "$WORK/heldout_notes" --output "${RESULTS}_parts" \
        --figure-files "${HELD_OUT}_phrase_000" "$(basename "$figure_note" .flac)"
fi
