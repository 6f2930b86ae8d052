"""Preprocess audio files into a store for training.

    python scripts/preprocess.py INPUT [INPUT ...] --output DB_DIR [--sample-rate 44100] [--channels 1]

INPUTs are audio files or folders (searched recursively for .wav .flac .ogg .opus .mp3
.aiff .aif). The store format is described in :mod:`rave_ddsp.data.store`.
"""
import argparse
import sys
from typing import Optional, Sequence

from rave_ddsp.data.store import preprocess
from rave_ddsp.errors import script_main


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Decode, resample and pack audio files into a training store.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)")
    parser.add_argument("--output", required=True, metavar="DB_DIR", help="the store folder to create")
    parser.add_argument("--sample-rate", type=int, default=44100, help="target sample rate in Hz (the model's)")
    parser.add_argument("--channels", type=int, default=1, help="target channel count (the model's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store at DB_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = preprocess(args.inputs, args.output, args.sample_rate, args.channels,
                             overwrite=args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted: no store was written at {args.output} (nothing partial is left)", file=sys.stderr)
        return 130
    print(summary)
    for clipping in summary.clipped:
        print(f"warning: {clipping}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
