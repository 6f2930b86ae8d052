"""Per-buffer compute of the live export at nn~'s small buffers, beside the official RAVE v2 causal export.

    bash benchmarks/setup_rave_venv.sh          # once: the official RAVE in .cache/rave-venv (optional)
    python -m benchmarks.bench_live [--rounds 6] [--block 200] [--no-rave] [--no-nn-client]

Exports ``configs/live.yaml`` (untrained, streaming: speed does not depend on the weights) and times
``forward`` as nn~ calls it, one ``[1, 1, B]`` buffer per call on 1 thread, at B = 128 and 256 (and 2048,
the buffer the other figures use), in ``--rounds`` rounds of ``--block`` calls per case, the order of
the cases reversed every other round so that a shared machine's load falls on all alike. A host must
finish each call well within the buffer's period; the live target is a p99 under half the period at 256.

The official RAVE v2 with its ``causal.gin`` (exported by RAVE's own script in its venv, see
:mod:`benchmarks.bench_rave_baseline`) runs in the same rounds at 2048: its hop is 2048 samples, so nn~
cannot give it a smaller buffer (it raises the buffer to the hop).

The same exports are then timed as nn~ 1.6.0 runs them: by ``tools/nn_client`` built against libtorch
2.5.1 (the runtime its binaries embed; fetched once into ``.cache``, see :mod:`benchmarks.bench_latency`),
``--threads 1``, its per-buffer times (``-v``), ``--rounds`` runs of ``--block`` buffers per case, the
cases alternated. ``--no-nn-client`` skips that pass. Writes ``benchmarks/results/live.json``.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from benchmarks.bench_stream import SAMPLE_RATE, WARMUP, BufferFeed, buffer_stats, export_ours, parameter_count
from benchmarks.common import alternating, write_results
from benchmarks.compare_rave import REPO, export_rave, interleaved_feeds

sys.path.insert(0, str(REPO / "tools" / "nn_client"))  # the nn~ driver is a tool, not installed
import nn_client  # noqa: E402

BUFFERS = (128, 256, 2048)
NN_CLIENT_BUFFERS = (128, 256)  # ours in libtorch 2.5.1; RAVE at its hop, 2048
BUFFER_LINE = re.compile(r"buffer (\d+): ([0-9.]+) ms")  # nn_client -v, one line per buffer


def nn_client_times(binary: Path, path: Path, buffer: int, buffers: int) -> List[float]:
    """Seconds per buffer after the first ``WARMUP`` as nn_client (libtorch 2.5.1) streams ``forward``."""
    seconds = (buffers + WARMUP) * buffer / SAMPLE_RATE
    done = nn_client.run_nn_client(path, "--method", "forward", "--buffer", str(buffer), "--threads", "1",
                                   "--seconds", f"{seconds:.4f}", "-v", binary=binary)
    times = [float(ms) / 1000 for index, ms in BUFFER_LINE.findall(done.stdout) if int(index) >= WARMUP]
    if done.returncode != 0 or not times:
        raise RuntimeError(f"nn_client failed on {path} at buffer {buffer} (exit {done.returncode}):\n"
                           f"{done.stdout[-3000:]}")
    return times


def nn_client_rounds(binary: Path, cases: Dict[str, Tuple[Path, int]], rounds: int, block: int
                     ) -> Dict[str, List[float]]:
    """``rounds`` runs of ``block`` buffers per case, one process each, the order reversed every other round."""
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for name in alternating(list(cases), rounds):
        path, buffer = cases[name]
        times[name] += nn_client_times(binary, path, buffer, block)
    return times


def stats_with_period(times: List[float], buffer: int) -> Dict[str, float]:
    stats = buffer_stats(times, buffer=buffer, sample_rate=SAMPLE_RATE)
    stats["p99_over_period"] = stats["p99_ms"] / stats["buffer_ms"]
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "live.yaml")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=200, help="calls per case per round (default 200)")
    parser.add_argument("--no-rave", action="store_true", help="leave the official RAVE out")
    parser.add_argument("--export-dir", type=Path, default=REPO / ".cache" / "bench_exports")
    parser.add_argument("--reuse", action="store_true", help="reuse RAVE's export already in --export-dir")
    parser.add_argument("--no-nn-client", action="store_true", help="skip the pass in libtorch 2.5.1 (nn_client)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    binary: Optional[Path] = None
    if not args.no_nn_client:
        binary = nn_client.build_nn_client(nn_client.ensure_libtorch("2.5.1"))  # fetched once into .cache

    with tempfile.TemporaryDirectory() as tmp:
        ours_path = export_ours(args.config, Path(tmp))["streaming"]
        rave_path = None
        rave_version = None
        if not args.no_rave:
            exported = export_rave(args.export_dir, args.reuse, causal=True)
            rave_version, rave_path = exported["rave_version"], exported["streaming"]
        results = time_in_torch(ours_path, rave_path, args)
        if binary is not None:
            files = {f"rave_ddsp {args.config.stem} @ {buffer}": (ours_path, buffer) for buffer in NN_CLIENT_BUFFERS}
            if rave_path is not None:
                files["RAVE v2 causal @ 2048"] = (rave_path, 2048)
            times = nn_client_rounds(binary, files, args.rounds, args.block)
            for name, (path, buffer) in files.items():
                results[f"{name}, libtorch 2.5.1 (nn_client)"] = stats_with_period(times[name], buffer)
    settings = {"config": str(args.config.relative_to(REPO)), "threads": 1, "rounds": args.rounds,
                "block": args.block, "warmup": WARMUP, "buffers": list(BUFFERS),
                "rave": f"acids-rave=={rave_version} v2.gin + causal.gin" if rave_version else None,
                "timed": "scripted streaming exports, forward per [1, 1, B] buffer, untrained weights; "
                         f"in torch {torch.__version__} (interleaved in one process)"
                         + ("" if binary is None else " and in libtorch 2.5.1 by nn_client -v --threads 1 "
                            "(one process per block, alternated)")}
    path = write_results("live", settings, results)
    print(f"{'case':<58} {'median ms':>9} {'p99 ms':>7} {'period ms':>9} {'p99/period':>10}")
    for name, stats in results.items():
        print(f"{name:<58} {stats['median_ms']:>9.3f} {stats['p99_ms']:>7.3f} {stats['buffer_ms']:>9.2f} "
              f"{stats['p99_over_period']:>10.3f}")
    print(f"-> {path}")


def time_in_torch(ours_path: Path, rave_path: Optional[Path], args: argparse.Namespace) -> Dict[str, Dict]:
    """Per-buffer statistics in this torch, every case interleaved in one process."""
    cases: Dict[str, Tuple[torch.nn.Module, int]] = {}
    ours = torch.jit.load(str(ours_path)).eval()
    for buffer in BUFFERS:
        cases[f"rave_ddsp {args.config.stem} @ {buffer}"] = (ours, buffer)
    if rave_path is not None:
        cases["RAVE v2 causal @ 2048"] = (torch.jit.load(str(rave_path)).eval(), 2048)
    # the three buffer sizes share one streaming module (and its state): a seam between blocks costs nothing
    feeds = {name: BufferFeed(module, buffer=buffer) for name, (module, buffer) in cases.items()}
    times = interleaved_feeds(feeds, args.rounds, args.block)
    results = {}
    for name, (module, buffer) in cases.items():
        results[name] = stats_with_period(times[name], buffer)
        results[name]["parameters"] = parameter_count(module)
    return results


if __name__ == "__main__":
    main()
