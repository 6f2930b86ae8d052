"""Export a trained run (or checkpoint) to TorchScript for nn~.

    python scripts/export.py RUN_DIR_OR_CKPT --output MODEL.ts [--streaming]
        [--latent-size N | --fidelity F] [--channels C] [--host-buffer SAMPLES]

--streaming builds the version for real-time use in nn~ (state carried between buffers;
its delay is printed in samples and ms). Without it, each call is independent (offline use,
scripts). --host-buffer N adds what nn~ with buffer N adds: two buffers (one filling, one being
computed on nn~'s thread), or one hop with N = 0 (nn~'s no-thread mode).
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from rave_ddsp.errors import script_main
from rave_ddsp.runtime.export import export


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="run folder (uses checkpoints/last.ckpt) or checkpoint file")
    parser.add_argument("--output", type=Path, required=True, help="the .ts file to write")
    parser.add_argument("--streaming", action="store_true", help="cached convolutions for nn~ (real time)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--latent-size", type=int, help="keep this many PCA dimensions (default: all)")
    size.add_argument("--fidelity", type=float,
                      help="keep the fewest PCA dimensions whose explained variance reaches this (0 < F <= 1)")
    parser.add_argument("--channels", type=int,
                        help="channels of the export (default: the model's; a mono model codes each one alone)")
    parser.add_argument("--host-buffer", type=int, metavar="SAMPLES",
                        help="also print the delay a player hears in nn~ with this buffer argument (0: no-thread mode)")
    args = parser.parse_args(argv)
    if args.host_buffer is not None and args.host_buffer < 0:
        parser.error(f"--host-buffer {args.host_buffer}: expected nn~'s buffer argument, 0 or more samples")
    summary = export(args.source, args.output, streaming=args.streaming, latent_size=args.latent_size,
                     fidelity=args.fidelity, channels=args.channels)
    print(summary.describe(args.host_buffer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
