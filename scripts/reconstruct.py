"""Run audio files through a model (encode then decode): reconstruction, or timbre transfer
when the audio comes from another instrument than the one the model learnt.

    python scripts/reconstruct.py FILES_OR_DIRS... --model RUN_OR_TS --output DIR
        [--format wav|flac] [--compare] [--device cpu|cuda]
        [--precision 32|bf16] [--batch-seconds S] [--quiet]

Each audio file (any length and sample rate, resampled to the model's; channels converted)
becomes DIR/<relative name>.wav (float32; or 24-bit .flac) at the model's sample rate, of
the same duration. --compare also writes DIR/<relative name>.png with the spectrograms of
the (resampled) input and the output.
"""
import argparse
import sys
from typing import Optional, Sequence

from rave_ddsp.runtime.jobs import AUDIO_FORMATS, add_model_options, parse_device, reconstruct_files
from rave_ddsp.errors import script_main
from rave_ddsp.runtime.inference import load


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR", help="audio files or folders (recursive)")
    parser.add_argument("--format", default="wav", choices=sorted(AUDIO_FORMATS), help="audio file format")
    parser.add_argument("--compare", action="store_true", help="also write input/output spectrograms (.png)")
    add_model_options(parser, "folder for the audio files")
    args = parser.parse_args(argv)
    model = load(args.model, parse_device(args.device), args.precision)
    run = reconstruct_files(args.inputs, model, args.output, args.format,
                            args.compare, args.batch_seconds, progress=not args.quiet)
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
