#!/usr/bin/env bash
# What the look-ahead budget costs: `small` fully centred, with the shipped 100 ms budget, and
# causal, each trained for the same wall-clock on the dev phrases without one instrument, then
# scored on that instrument. Results: benchmarks/results/lookahead_small_12min.{json,md}.
#   bash benchmarks/lookahead_runs.sh [DEV_PHRASES_DIR] [HELD_OUT_INSTRUMENT] [MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
PHRASES=${1:-../shared/data/dev/phrases}
HELD_OUT=${2:-clarinet}
MINUTES=${3:-12}
WORK=${WORK:-.cache/lookahead}
mkdir -p "$WORK/train" "$WORK/heldout"
for f in "$PHRASES"/*.flac; do
    case "$(basename "$f")" in
        "$HELD_OUT"_*) ln -sf "$(realpath "$f")" "$WORK/heldout/" ;;
        *) ln -sf "$(realpath "$f")" "$WORK/train/" ;;
    esac
done
.venv/bin/python scripts/preprocess.py "$WORK/train" --output "$WORK/db" --overwrite --quiet
for spec in "centred:--model.lookahead_ms null" "budget100:--model.lookahead_ms 100" "causal:--model.causal true"; do
    name=${spec%%:*}
    # shellcheck disable=SC2086
    .venv/bin/python scripts/train.py --config configs/small.yaml --data.path "$WORK/db" --name "$name" \
        --runs_root "$WORK/runs" --overwrite --trainer.max_time "00:00:$(printf %02d "$MINUTES"):00" \
        --trainer.val_check_interval 400 --data.max_val_items 8 --trainer.enable_progress_bar false ${spec#*:}
done
.venv/bin/python scripts/evaluate.py --model "$WORK/runs/centred" --compare "$WORK/runs/budget100" "$WORK/runs/causal" \
    --data "$WORK/heldout" --crepe-model tiny --output benchmarks/results/lookahead_small_12min.json
