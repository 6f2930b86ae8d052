# Sourced by the benchmark run scripts. split_phrases DEV HELD_OUT WORK links the dev phrases of every
# instrument but HELD_OUT into WORK/train and HELD_OUT's into WORK/heldout_phrases.
split_phrases() {
    local dev=$1 held_out=$2 work=$3 f
    mkdir -p "$work/train" "$work/heldout_phrases"
    for f in "$dev"/phrases/*.flac; do
        case "$(basename "$f")" in
            "$held_out"_*) ln -sf "$(realpath "$f")" "$work/heldout_phrases/" ;;
            *) ln -sf "$(realpath "$f")" "$work/train/" ;;
        esac
    done
}

# unseen_notes DEV WORK links the dev notes of every instrument at MIDI 60-79, velocity 85, into
# WORK/unseen_notes (the runs train on phrases only, so they hear none of these).
unseen_notes() {
    local dev=$1 work=$2 f
    mkdir -p "$work/unseen_notes"
    for f in "$dev"/notes/*_0[67]?_085.flac; do ln -sf "$(realpath "$f")" "$work/unseen_notes/"; done
}

# preprocess_once WORK writes the store WORK/db from WORK/train unless it is there already.
preprocess_once() {
    [ -f "$1/db/index.json" ] || .venv/bin/python scripts/preprocess.py "$1/train" --output "$1/db" --quiet
}

# train_timed WORK MINUTES NAME [TRAIN_ARGS...] trains run NAME on the store WORK/db into WORK/runs for
# MINUTES of wall-clock, as every comparison does (validation every 400 steps on 8 items, no progress bar).
train_timed() {
    local work=$1 minutes=$2 name=$3; shift 3
    .venv/bin/python scripts/train.py "$@" --data.path "$work/db" --name "$name" \
        --runs_root "$work/runs" --overwrite --trainer.max_time "00:00:$(printf %02d "$minutes"):00" \
        --trainer.val_check_interval 400 --data.max_val_items 8 --trainer.enable_progress_bar false
}
