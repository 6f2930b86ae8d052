# Sourced by the benchmark run scripts: split_phrases DEV HELD_OUT WORK links the dev phrases of every
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
