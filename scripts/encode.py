"""Encode audio files into latents (PCA coordinates) with a trained model.

    python scripts/encode.py FILES_OR_DIRS... --model RUN_OR_TS --output DIR
        [--codes [--codebooks K]] [--device cpu|cuda]
        [--precision 32|bf16] [--batch-seconds S] [--quiet]

Each audio file (any length and sample rate, resampled to the model's; channels converted)
becomes DIR/<relative name>.npy, a float32 [Z, L] array at the model's frame rate, and
DIR/<relative name>.json, which records the model, its rates, the latent size and the
original length (scripts/decode.py crops to it). Unreadable files are skipped and listed.

--codes (discrete models, configs/discrete.yaml): DIR/<relative name>.npy holds the integer
codes [K, L] of the first K codebooks (--codebooks, default all) in the smallest unsigned
integer type that holds them, and the sidecar adds the bitrate and the codebooks'
fingerprint (scripts/decode.py refuses codes of another model).
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
    parser.add_argument("--codes", action="store_true", help="write integer codes (discrete models)")
    parser.add_argument("--codebooks", type=int, help="with --codes: keep the first K codebooks (a lower bitrate)")
    args = parser.parse_args(argv)
    model = load(args.model, parse_device(args.device), args.precision)
    run = encode_files(args.inputs, model, args.output, args.batch_seconds,
                       progress=not args.quiet, codes=args.codes, codebooks=args.codebooks)
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
