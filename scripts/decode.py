"""Decode latents (.npy [Z, L] PCA coordinates, as scripts/encode.py writes them) or codes into audio.

    python scripts/decode.py LATENTS... --model RUN_OR_TS --output DIR
        [--codebooks K] [--format wav|flac] [--device cpu|cuda]
        [--precision 32|bf16] [--batch-seconds S] [--quiet]

LATENTS are .npy files or folders of them (recursive). Each becomes DIR/<relative name>.wav
(float32; or 24-bit .flac) at the model's sample rate, cropped to the original length when
a .json sidecar from scripts/encode.py sits next to it. A latent whose size differs from the
model's stops the run before anything is written.

Integer arrays are codes (scripts/encode.py --codes, discrete models): they decode with
their first K codebooks (--codebooks, default all the file holds). Codes of another model
(the sidecar's codebook fingerprint differs) stop the run; codes outside the codebooks are
skipped and listed.
"""
import argparse
import sys
from typing import Optional, Sequence

from rave_ddsp.runtime.jobs import AUDIO_FORMATS, add_model_options, decode_files, parse_device
from rave_ddsp.errors import script_main
from rave_ddsp.runtime.inference import load


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="LATENTS", help=".npy files or folders (recursive)")
    parser.add_argument("--format", default="wav", choices=sorted(AUDIO_FORMATS), help="audio file format")
    parser.add_argument("--codebooks", type=int, help="decode codes with their first K codebooks (a lower bitrate)")
    add_model_options(parser, "folder for the audio files")
    args = parser.parse_args(argv)
    model = load(args.model, parse_device(args.device), args.precision)
    run = decode_files(args.inputs, model, args.output, args.format,
                       args.batch_seconds, progress=not args.quiet, codebooks=args.codebooks)
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
