"""Encode audio files into latents (PCA coordinates) with a trained model.

    python scripts/encode.py FILES_OR_DIRS... --model RUN_OR_TS --output DIR
        [--device cpu|cuda] [--batch-seconds S] [--quiet]

Each audio file (any length and sample rate, resampled to the model's; channels converted)
becomes DIR/<relative name>.npy, a float32 [Z, L] array at the model's frame rate, and
DIR/<relative name>.json, which records the model, its rates, the latent size and the
original length (scripts/decode.py crops to it). Unreadable files are skipped and listed.
"""
import argparse
import sys
from typing import Optional, Sequence

from rave_ddsp.runtime.jobs import add_model_options, encode_files, parse_device
from rave_ddsp.errors import script_main
from rave_ddsp.runtime.inference import load


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders (recursive)")
    add_model_options(parser, "folder for the .npy latents and .json sidecars")
    args = parser.parse_args(argv)
    model = load(args.model, parse_device(args.device))
    run = encode_files(args.inputs, model, args.output, args.batch_seconds,
                       progress=not args.quiet)
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
