"""This project's streaming v2 export against the official RAVE v2's, side by side, 1 CPU thread.

    bash benchmarks/setup_rave_venv.sh          # once: the official RAVE in .cache/rave-venv
    python -m benchmarks.compare_rave [--config configs/v2.yaml] [--rounds 6] [--block 50] [--reuse]
        [--set KEY=VALUE --output NAME]

1. exports the official RAVE v2 (untrained, RAVE's own ``scripts/export.py``, streaming and
   offline) by running :mod:`benchmarks.bench_rave_baseline` in RAVE's venv;
2. exports this project's model from ``--config`` (untrained, streaming and offline);
3. loads the four TorchScript files in this process (same torch build as RAVE's venv),
   warms each streaming model up (10 calls), then times ``forward`` on consecutive
   ``[1, 1, 2048]`` buffers (one call per buffer, as nn~ does) in ``--rounds`` rounds of
   ``--block`` buffers per model, alternating which model goes first, so that the load of
   a shared machine falls on both alike; offline ``forward`` (encode+decode) on ~10 s is
   alternated the same way, then counted (convolution and matrix-product FLOPs of one call,
   ``torch.utils.flop_counter``) to give each model's arithmetic and the rate it reaches; then
   timed again with 2 threads and with a batch of 8 (``--offline-more``);
4. profiles both streaming models per buffer (torch.profiler, top ops by self CPU time) into
   ``benchmarks/results/stream_profile.txt`` (``--no-profile`` skips it).

``--set KEY=VALUE`` replaces a setting of ``--config``'s model (e.g.
``'hidden_channels=[64,128,256,512,512]'``), and ``--output NAME`` names the results (needed
with ``--set``; the exports are then ``rave_ddsp_NAME_*.ts``). Writes
``benchmarks/results/stream_vs_rave.json`` (or ``NAME.json``): machine, median / p99 / mean / min per
buffer (ms), RTF = buffer duration / median, offline RTF, exported file sizes, parameter
counts, and the speed-ups (RAVE's time / ours). Exports go to ``--export-dir``
(default ``.cache/bench_exports``, git-ignored); ``--reuse`` keeps the files already there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_stream import (BUFFER, WARMUP, BufferFeed, buffer_count, buffer_stats, describe_file,
                                     export_ours, offline_input, offline_stats, parameter_count, profile_table,
                                     time_offline_once)
from benchmarks.common import alternating, write_results

REPO = Path(__file__).resolve().parent.parent
RAVE_PYTHON = REPO / ".cache" / "rave-venv" / "bin" / "python"
NAMES = ("rave", "ours")
DEFAULT_OUTPUT = "stream_vs_rave"
"""Results name of the comparison as configured (no ``--set``)."""


def require_rave_venv() -> Path:
    """The Python of RAVE's venv, or a stop that says how to set it up."""
    if not RAVE_PYTHON.exists():
        raise SystemExit(f"{RAVE_PYTHON} not found: set RAVE's venv up first (bash benchmarks/setup_rave_venv.sh)")
    return RAVE_PYTHON


def export_rave(export_dir: Path, reuse: bool, causal: bool = False) -> Dict[str, object]:
    """The official RAVE v2's exports (``causal``: with its ``causal.gin``), made in RAVE's venv."""
    stem = "rave_v2_causal" if causal else "rave_v2"
    paths = {"streaming": export_dir / f"{stem}_streaming.ts", "offline": export_dir / f"{stem}.ts"}
    if reuse and all(p.exists() for p in paths.values()):
        return {"rave_version": "2.3.1 (reused export)", **paths}
    command = [str(require_rave_venv()), "-W", "ignore", "-m", "benchmarks.bench_rave_baseline",
               "--export-only", str(export_dir)] + (["--causal"] if causal else [])
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit("exporting the official RAVE failed")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rave_version": info["rave_version"], "streaming": Path(info["streaming"]),
            "offline": Path(info["offline"])}


def export_ours_cached(config: Path, export_dir: Path, reuse: bool, overrides: Dict[str, object],
                       name: str) -> Dict[str, Path]:
    stem = config.stem if name == DEFAULT_OUTPUT else name  # settings changed: files of their own
    paths = {kind: export_dir / f"rave_ddsp_{stem}_{kind}.ts" for kind in ("streaming", "offline")}
    if reuse and all(p.exists() for p in paths.values()):
        return paths
    return export_ours(config, export_dir, overrides=overrides, stem=stem)


def model_setting(text: str) -> Tuple[str, object]:
    """``"hidden_channels=[64, 128]"`` -> ``("hidden_channels", [64, 128])`` (the value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as hidden_channels=[64,128], got {text!r}")
    return key.strip(), yaml.safe_load(value)


def interleaved_feeds(feeds: Dict[str, BufferFeed], rounds: int, block: int) -> Dict[str, List[float]]:
    """Seconds per call of each feed: after WARMUP calls each, ``rounds`` rounds of ``block`` calls per
    feed, the order reversed every other round, so that a shared machine's load falls on all alike."""
    for feed in feeds.values():
        feed.run(WARMUP)
    times: Dict[str, List[float]] = {name: [] for name in feeds}
    for name in alternating(list(feeds), rounds):
        times[name] += feeds[name].run(block)
    return times


def interleaved_buffers(models: Dict[str, torch.nn.Module], rounds: int, block: int) -> Dict[str, List[float]]:
    return interleaved_feeds({name: BufferFeed(module) for name, module in models.items()}, rounds, block)


def interleaved_offline(models: Dict[str, torch.nn.Module], calls: int, batch: int = 1,
                        count: bool = True) -> Dict[str, object]:
    inputs = {name: offline_input(int(m.decode_params[1])).repeat(batch, 1, 1) for name, m in models.items()}
    for name, module in models.items():
        time_offline_once(module, inputs[name])  # warm-up
    times: Dict[str, List[float]] = {name: [] for name in models}
    for name in alternating(list(models), calls):
        times[name].append(time_offline_once(models[name], inputs[name]))
    results = {name: offline_stats(times[name], inputs[name].shape[-1]) for name in models}
    for name, stats in results.items():
        stats["batch"], stats["threads"] = batch, torch.get_num_threads()
        if not count:
            continue
        flops = arithmetic(models[name], inputs[name])
        stats["gflop"] = flops / 1e9
        stats["gflop_per_s"] = flops / 1e9 / stats["median_s"]
    return results


def arithmetic(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one ``module(x)`` as torch's FLOP counter sees them (convolutions
    and matrix products, 2 per multiply-add; elementwise work and FFTs are not counted)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def threads_batch(text: str) -> Tuple[int, int]:
    """``"2,8"`` -> ``(2, 8)``: torch threads and batch of an offline setting."""
    try:
        threads, batch = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected THREADS,BATCH such as 2,8, got {text!r}") from None
    if threads < 1 or batch < 1:
        raise argparse.ArgumentTypeError(f"threads and batch must be at least 1, got {text!r}")
    return threads, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/v2.yaml"))
    parser.add_argument("--rounds", type=int, default=6, help="rounds of interleaved blocks (default 6)")
    parser.add_argument("--block", type=int, default=50, help="buffers per model per round (default 50)")
    parser.add_argument("--offline-calls", type=int, default=3, help="timed 10 s calls per model (default 3)")
    parser.add_argument("--offline-more", type=threads_batch, nargs="*", default=[(2, 1), (1, 8), (2, 8)],
                        metavar="THREADS,BATCH",
                        help="further offline settings, alternated the same way (default 2,1 1,8 2,8; none: skip)")
    parser.add_argument("--offline-more-calls", type=int, default=3, help="timed calls per model for those (default 3)")
    parser.add_argument("--set", type=model_setting, action="append", default=[], metavar="KEY=VALUE",
                        help="replace a model setting of --config (YAML value; repeatable), e.g. "
                             "'hidden_channels=[64,128,256,512,512]'; needs --output")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="results name, benchmarks/results/OUTPUT.json (default stream_vs_rave)")
    parser.add_argument("--export-dir", type=Path, default=REPO / ".cache" / "bench_exports")
    parser.add_argument("--reuse", action="store_true", help="reuse the exports already in --export-dir")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-calls", type=int, default=20,
                        help="buffer calls profiled per model (default 20; the tables take minutes for more)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    args.export_dir.mkdir(parents=True, exist_ok=True)

    start = time.time()
    rave = export_rave(args.export_dir, args.reuse)
    if args.set and args.output == DEFAULT_OUTPUT:
        parser.error("--set changes the model: name its results with --output")
    overrides = dict(args.set)
    ours = export_ours_cached(args.config, args.export_dir, args.reuse, overrides, args.output)
    print(f"exports ready in {time.time() - start:.0f} s", flush=True)
    paths = {"rave": {k: rave[k] for k in ("streaming", "offline")}, "ours": ours}
    streaming = {name: torch.jit.load(str(paths[name]["streaming"])).eval() for name in NAMES}
    offline = {name: torch.jit.load(str(paths[name]["offline"])).eval() for name in NAMES}

    buffer_times = interleaved_buffers(streaming, args.rounds, args.block)
    offline_results = interleaved_offline(offline, args.offline_calls)
    more_offline = []  # the same call with 2 threads and with a batch of 8 (mc.nn~ voices, batch scripts)
    for threads, batch in args.offline_more:
        torch.set_num_threads(threads)
        more_offline.append(interleaved_offline(offline, args.offline_more_calls, batch, count=False))
        torch.set_num_threads(1)
    results: Dict[str, object] = {}
    for name in NAMES:
        results[name] = {
            "streaming": buffer_stats(buffer_times[name]),
            "offline": offline_results[name],
            "offline_more": [row[name] for row in more_offline],
            "files": {kind: describe_file(Path(p)) for kind, p in paths[name].items()},
            "parameters": parameter_count(streaming[name]),
            "buffer_elements": buffer_count(streaming[name]),
        }
    r, o = results["rave"], results["ours"]
    results["speedup_ours_over_rave"] = {
        "streaming_median": r["streaming"]["median_ms"] / o["streaming"]["median_ms"],
        "streaming_p99": r["streaming"]["p99_ms"] / o["streaming"]["p99_ms"],
        "streaming_min": r["streaming"]["min_ms"] / o["streaming"]["min_ms"],
        "offline": o["offline"]["rtf"] / r["offline"]["rtf"],
    }
    for mine, theirs in zip(o["offline_more"], r["offline_more"]):
        key = f"offline_{mine['threads']}_threads_batch_{mine['batch']}"
        results["speedup_ours_over_rave"][key] = theirs["median_s"] / mine["median_s"]
    settings = {
        "config": str(args.config), "model_settings_replaced": overrides,
        "rave": f"acids-rave=={rave['rave_version']} (v2.gin, scripts/export.py)",
        "buffer": BUFFER, "warmup_calls": WARMUP, "rounds": args.rounds, "block": args.block,
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "weights": "untrained (random init)", "load_average": list(os.getloadavg()),
        "timed": "TorchScript forward() per [1, 1, 2048] buffer, streaming exports, interleaved blocks; "
                 "offline: one forward() (encode+decode) of ~10 s on the non-streaming exports",
    }
    path = write_results(args.output, settings, results)
    ours_label = f"rave_ddsp {args.config.stem}{'*' if overrides else ''}"  # *: settings replaced
    for name, label in (("rave", "RAVE v2 2.3.1"), ("ours", ours_label)):
        s, f = results[name]["streaming"], results[name]["offline"]
        print(f"{label:>20}: per buffer median {s['median_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
              f"min {s['min_ms']:6.2f} ms  RTF {s['rtf']:5.2f} | offline RTF {f['rtf']:5.1f} "
              f"({f['gflop']:.1f} GFLOP, {f['gflop_per_s']:.0f} GFLOP/s) | "
              f"streaming file {results[name]['files']['streaming']['size_mb']:.1f} MB | "
              f"{results[name]['parameters']:,} params")
    for mine, theirs in zip(results["ours"]["offline_more"], results["rave"]["offline_more"]):
        print(f"offline, {mine['threads']} thread(s), batch {mine['batch']}: RAVE {theirs['median_s']:.3f} s, "
              f"ours {mine['median_s']:.3f} s per call")
    print(f"speed-up (RAVE time / ours): {json.dumps({k: round(v, 2) for k, v in results['speedup_ours_over_rave'].items()})}")
    print(f"-> {path}")

    if not args.no_profile:
        text = profile_table(streaming["ours"], args.profile_calls, title=f"rave_ddsp streaming export ({args.config})")
        text += "\n\n" + profile_table(streaming["rave"], args.profile_calls,
                                       title="official RAVE v2 2.3.1 streaming export (for comparison)")
        profile_path = path.parent / ("stream_profile.txt" if args.output == DEFAULT_OUTPUT
                                      else f"{args.output}_profile.txt")
        profile_path.write_text(text)
        print(f"profile -> {profile_path}")


if __name__ == "__main__":
    main()
