"""Streaming export speed (1 thread, nn~'s buffer of 2048 samples) and offline encode+decode speed.

    python -m benchmarks.bench_stream [--config configs/v2.yaml] [--buffers 300] [--profile]

Builds this project's TorchScript exports from a config with untrained weights (speed does
not depend on the weights): the streaming one (``RAVE(..., streaming=True)`` +
:func:`rave_ddsp.runtime.export.build`), timed as nn~ runs it, one ``forward`` call per
``[1, 1, 2048]`` buffer, and the offline one, timed on one ``forward`` (encode + decode)
of ~10 s. Writes ``benchmarks/results/stream.json``; with ``--profile`` also
``benchmarks/results/stream_profile.txt`` (torch.profiler, top ops by self CPU time).

The timing helpers below use torch only, so the official-RAVE side
(:mod:`benchmarks.bench_rave_baseline`, run in RAVE's own venv) shares them;
:mod:`benchmarks.compare_rave` runs both exports interleaved in one process.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

SAMPLE_RATE = 44100
BUFFER = 2048
OFFLINE_SECONDS = 10.0
WARMUP = 10
"""Warm-up calls before timing (TorchScript's profiling executor specialises in the first few)."""


# ---------------------------------------------------------------- timing helpers (torch only)

def test_signal(samples: int, seed: int = 0) -> torch.Tensor:
    """``[1, 1, samples]``: white noise at -20 dBFS (non-zero input: no denormal shortcuts)."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, 1, samples, generator=generator)


class BufferFeed:
    """Calls ``module.forward`` on consecutive ``[1, 1, buffer]`` slices of a looping test signal."""

    def __init__(self, module: torch.nn.Module, buffer: int = BUFFER, seconds: float = 20.0, seed: int = 0):
        self.module = module
        self.buffer = buffer
        n = max(1, int(seconds * SAMPLE_RATE) // buffer)
        self.buffers = list(test_signal(n * buffer, seed).split(buffer, dim=-1))
        self.index = 0

    def call(self) -> None:
        x = self.buffers[self.index % len(self.buffers)]
        self.index += 1
        self.module(x)

    def run(self, n: int) -> List[float]:
        """Seconds for each of ``n`` calls."""
        times = []
        with torch.no_grad():
            for _ in range(n):
                start = time.perf_counter()
                self.call()
                times.append(time.perf_counter() - start)
        return times


def percentile(values: List[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (numpy's default), without numpy."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def buffer_stats(times: List[float], buffer: int = BUFFER, sample_rate: int = SAMPLE_RATE) -> Dict[str, float]:
    """Per-buffer median / p99 / mean / min (ms) and RTF = buffer duration / median."""
    med = statistics.median(times)
    return {
        "buffers_timed": len(times),
        "median_ms": 1000 * med,
        "p99_ms": 1000 * percentile(times, 99),
        "mean_ms": 1000 * statistics.fmean(times),
        "min_ms": 1000 * min(times),
        "buffer_ms": 1000 * buffer / sample_rate,
        "rtf": buffer / sample_rate / med,
    }


def offline_input(hop: int, seconds: float = OFFLINE_SECONDS) -> torch.Tensor:
    """``[1, 1, T]``: ~``seconds`` of test signal, ``T`` a multiple of ``hop`` (both models need that)."""
    return test_signal((int(seconds * SAMPLE_RATE) // hop) * hop, seed=1)


def time_offline_once(module: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        module(x)
        return time.perf_counter() - start


def offline_stats(times: List[float], samples: int, sample_rate: int = SAMPLE_RATE) -> Dict[str, float]:
    med = statistics.median(times)
    return {
        "calls_timed": len(times),
        "audio_seconds": samples / sample_rate,
        "median_s": med,
        "min_s": min(times),
        "rtf": samples / sample_rate / med,
    }


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def buffer_count(module: torch.nn.Module) -> int:
    """Elements in the module's buffers (PQMF kernels, streaming caches, PCA, ...)."""
    return sum(b.numel() for b in module.buffers())


def profile_table(module: torch.nn.Module, calls: int = 20, row_limit: int = 30, title: str = "") -> str:
    """torch.profiler tables (self CPU time, then grouped by input shape) over ``calls`` buffer calls."""
    from torch.profiler import ProfilerActivity, profile

    feed = BufferFeed(module, seed=2)
    feed.run(WARMUP)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(calls):
            feed.call()
    averages = prof.key_averages()
    shaped = prof.key_averages(group_by_input_shape=True)
    lines = [f"== {title}: {calls} calls of forward([1, 1, {BUFFER}]), 1 thread ==", "",
             "-- top ops by self CPU time --",
             averages.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=40),
             "-- top (op, input shapes) by self CPU time --",
             shaped.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=40,
                          max_shapes_column_width=90),
             ""]
    return "\n".join(lines)


def describe_file(path: Path) -> Dict[str, object]:
    return {"path": str(path), "size_bytes": path.stat().st_size, "size_mb": round(path.stat().st_size / 1e6, 2)}


def time_exports(paths: Dict[str, Path], buffers: int, offline_calls: int) -> Tuple[torch.nn.Module, Dict[str, object]]:
    """Load a pair of exports (``paths["streaming"]``, ``paths["offline"]``) and time them alone.

    Returns the streaming module and ``{"streaming": buffer stats, "offline": offline stats,
    "files": sizes}``; the files are read before the caller's temporary folder goes away.
    """
    streaming = torch.jit.load(str(paths["streaming"])).eval()
    offline = torch.jit.load(str(paths["offline"])).eval()
    files = {k: describe_file(p) for k, p in paths.items()}
    feed = BufferFeed(streaming)
    feed.run(WARMUP)
    stream = buffer_stats(feed.run(buffers))
    x = offline_input(int(offline.decode_params[1]))
    time_offline_once(offline, x)  # warm-up
    off = offline_stats([time_offline_once(offline, x) for _ in range(offline_calls)], x.shape[-1])
    return streaming, {"streaming": stream, "offline": off, "files": files}


# ---------------------------------------------------------------- this project's exports

def load_model_args(config: Path) -> Dict[str, object]:
    """The ``model`` section of a training config, minus optimisers/schedulers (not needed to export)."""
    import yaml

    args = dict(yaml.safe_load(Path(config).read_text())["model"])
    for key in [k for k in args if k.endswith("_optimizer") or k.endswith("_scheduler")]:
        args.pop(key)
    return args


def export_ours(config: Path, out_dir: Path, latent_size: Optional[int] = None, seed: int = 0,
                overrides: Optional[Dict[str, object]] = None, stem: Optional[str] = None) -> Dict[str, Path]:
    """Save the streaming and offline exports of ``config`` (untrained; model settings replaced by
    ``overrides``) to ``out_dir`` as ``rave_ddsp_<stem or config's stem>_{streaming,offline}.ts``; their paths."""
    from rave_ddsp.runtime.export import build
    from rave_ddsp.train.model import RAVE

    out_dir.mkdir(parents=True, exist_ok=True)
    args = load_model_args(config) | dict(overrides or {})
    latent = latent_size or int(args.get("latent_size", 128))
    paths = {}
    for name, streaming in (("streaming", True), ("offline", False)):
        torch.manual_seed(seed)
        model = RAVE(**args, streaming=streaming).eval()
        path = out_dir / f"rave_ddsp_{stem or Path(config).stem}_{name}.ts"
        torch.jit.save(build(model, latent), str(path))
        paths[name] = path
        del model
    return paths


def main() -> None:
    from benchmarks.common import write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/v2.yaml"))
    parser.add_argument("--buffers", type=int, default=300)
    parser.add_argument("--offline-calls", type=int, default=3)
    parser.add_argument("--latent-size", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="also write results/stream_profile.txt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        paths = export_ours(args.config, Path(tmp), args.latent_size)
        streaming, results = time_exports(paths, args.buffers, args.offline_calls)
    results.update(parameters=parameter_count(streaming), buffer_elements=buffer_count(streaming))
    stream, off, files = results["streaming"], results["offline"], results["files"]
    settings = {"config": str(args.config), "buffer": BUFFER, "warmup": WARMUP, "threads": 1,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    path = write_results("stream", settings, results)
    print(f"streaming forward @ {BUFFER}: median {stream['median_ms']:.2f} ms, p99 {stream['p99_ms']:.2f} ms, "
          f"RTF {stream['rtf']:.2f}; offline RTF {off['rtf']:.1f}; "
          f"file {files['streaming']['size_mb']} MB; {results['parameters']:,} parameters -> {path}")
    if args.profile:
        profile_path = path.parent / "stream_profile.txt"
        profile_path.write_text(profile_table(streaming, title=f"rave_ddsp streaming export ({args.config})"))
        print(f"profile -> {profile_path}")


if __name__ == "__main__":
    main()
