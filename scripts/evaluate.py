"""Evaluate trained models on a folder of audio: reconstruction, noise branch, size, speed, disentanglement.

    python scripts/evaluate.py --model RUN_OR_TS [--model ...] --data DIR [--output report.json]
        [--compare RUN_OR_TS ...] [--no-pitch] [--crepe-model full|tiny] [--interpolation]
        [--max-files N] [--codebooks K [K ...]] [--device cpu|cuda]
        [--precision 32|bf16] [--batch-seconds S] [--quiet]

Every audio file in DIR (recursive, sorted; the first N with --max-files) is resampled to
each model's rate, reconstructed and scored there: multi-scale STFT distance, DAC's mel
distance, SI-SDR, loudness L1 and F0 L1 / RMSE in cents, the outlier ratio and the fraction of
the frames scored where the output is pitched too (CREPE; skipped
with --no-pitch, or, said in the report, when torchcrepe is not installed). The noise
ablation: the filtered-noise branch's energy share of the output (dB) and the mel distance
with the branch off ('-' for a model without noise_level, e.g. official RAVE). Also the
parameter count and the realtime factor (1 thread, the normal reconstruction only).
--compare (or several --model) puts models side by side. --interpolation mixes the latents
of file pairs and reports how the output's loudness (and F0) follow each source.
A discrete model (configs/discrete.yaml) is scored at its full bitrate, or with --codebooks
once per number of codebooks K (its first K: a lower bitrate), with its codebooks' usage
(perplexity / size) on the audio.
Writes the JSON report and, next to it, report.md (also printed).
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from rave_ddsp.runtime.codec import BATCH_SECONDS
from rave_ddsp.runtime.jobs import add_precision_option, parse_device
from rave_ddsp.errors import script_main
from rave_ddsp.analysis.evaluation import check_report_path, evaluate, markdown, write_report
from rave_ddsp.runtime.inference import load


@script_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="run folder, checkpoint or non-streaming .ts "
                        "(repeat to compare)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="RUN_OR_TS", help="more models, side by side")
    parser.add_argument("--data", required=True, type=Path, help="folder of audio files (searched recursively)")
    parser.add_argument("--output", type=Path, default=Path("report.json"), help="JSON report; report.md next to it")
    parser.add_argument("--no-pitch", dest="pitch", action="store_false",
                        help="skip the F0 metrics (CREPE; skipped anyway, and said so, without torchcrepe)")
    parser.add_argument("--crepe-model", default="full", choices=["full", "tiny"],
                        help="CREPE size: full (reported numbers) or tiny (quick checks)")
    parser.add_argument("--interpolation", action="store_true", help="the latent interpolation test on file pairs")
    parser.add_argument("--max-files", type=int, help="evaluate only the first N files (sorted)")
    parser.add_argument("--codebooks", type=int, nargs="+", metavar="K",
                        help="score discrete models with their first K codebooks, for each K given")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_precision_option(parser)
    parser.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS, help="audio per forward pass")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    sources = args.model + args.compare
    if not sources:
        parser.error("give at least one --model (or --compare MODEL ...)")
    check_report_path(args.output)
    device = parse_device(args.device)
    models = [load(source, device, args.precision) for source in sources]
    report = evaluate(models, args.data, args.pitch, args.crepe_model, args.interpolation, args.max_files,
                      args.batch_seconds, progress=not args.quiet, codebooks=args.codebooks)
    json_path, markdown_path = write_report(report, args.output)
    print(markdown(report))
    print(f"wrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
