"""Per-buffer compute of the live export at nn~'s small buffers, beside the official RAVE v2 causal export.

    bash benchmarks/setup_rave_venv.sh          # once: the official RAVE in .cache/rave-venv (optional)
    python -m benchmarks.bench_live [--rounds 6] [--block 200] [--no-rave]

Exports ``configs/live.yaml`` (untrained, streaming: speed does not depend on the weights) and times
``forward`` as nn~ calls it, one ``[1, 1, B]`` buffer per call on 1 thread, at B = 128 and 256 (and 2048,
the buffer the other figures use), in ``--rounds`` rounds of ``--block`` calls per case, the order of
the cases reversed every other round so that a shared machine's load falls on all alike. A host must
finish each call well within the buffer's period; the live target is a p99 under half the period at 256.

The official RAVE v2 with its ``causal.gin`` (exported by RAVE's own script in its venv, see
:mod:`benchmarks.bench_rave_baseline`) runs in the same rounds at 2048: its hop is 2048 samples, so nn~
cannot give it a smaller buffer (it raises the buffer to the hop). Writes ``benchmarks/results/live.json``.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, Tuple

import torch

from benchmarks.bench_stream import SAMPLE_RATE, WARMUP, BufferFeed, buffer_stats, export_ours, parameter_count
from benchmarks.common import write_results
from benchmarks.compare_rave import REPO, export_rave, interleaved_feeds

BUFFERS = (128, 256, 2048)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "live.yaml")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=200, help="calls per case per round (default 200)")
    parser.add_argument("--no-rave", action="store_true", help="leave the official RAVE out")
    parser.add_argument("--export-dir", type=Path, default=REPO / ".cache" / "bench_exports")
    parser.add_argument("--reuse", action="store_true", help="reuse RAVE's export already in --export-dir")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cases: Dict[str, Tuple[torch.nn.Module, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours = torch.jit.load(str(export_ours(args.config, Path(tmp))["streaming"])).eval()
    for buffer in BUFFERS:
        cases[f"rave_ddsp {args.config.stem} @ {buffer}"] = (ours, buffer)
    rave_version = None
    if not args.no_rave:
        exported = export_rave(args.export_dir, args.reuse, causal=True)
        rave_version = exported["rave_version"]
        rave = torch.jit.load(str(exported["streaming"])).eval()
        cases["RAVE v2 causal @ 2048"] = (rave, 2048)
    # the three buffer sizes share one streaming module (and its state): a seam between blocks costs nothing
    feeds = {name: BufferFeed(module, buffer=buffer) for name, (module, buffer) in cases.items()}
    times = interleaved_feeds(feeds, args.rounds, args.block)
    results = {}
    for name, (module, buffer) in cases.items():
        stats = buffer_stats(times[name], buffer=buffer, sample_rate=SAMPLE_RATE)
        stats["p99_over_period"] = stats["p99_ms"] / stats["buffer_ms"]
        stats["parameters"] = parameter_count(module)
        results[name] = stats
    settings = {"config": str(args.config.relative_to(REPO)), "threads": 1, "rounds": args.rounds,
                "block": args.block, "warmup": WARMUP, "buffers": list(BUFFERS),
                "rave": f"acids-rave=={rave_version} v2.gin + causal.gin" if rave_version else None,
                "timed": "scripted streaming exports, forward per [1, 1, B] buffer, untrained weights"}
    path = write_results("live", settings, results)
    print(f"{'case':<32} {'median ms':>9} {'p99 ms':>7} {'period ms':>9} {'p99/period':>10}")
    for name, stats in results.items():
        print(f"{name:<32} {stats['median_ms']:>9.3f} {stats['p99_ms']:>7.3f} {stats['buffer_ms']:>9.2f} "
              f"{stats['p99_over_period']:>10.3f}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
