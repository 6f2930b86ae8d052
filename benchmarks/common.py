"""Shared helpers for the benchmark scripts: machine description, timing, results files.

Every benchmark writes ``benchmarks/results/<name>.json`` (machine, settings, numbers)
and prints a short table. Timings are medians over repeats, one torch thread unless a
benchmark says otherwise (see DEVELOPERS notes: multi-threaded timings on a shared
machine swing by orders of magnitude).
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

from rave_ddsp.files import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> Dict[str, object]:
    """Describe the machine the numbers were measured on."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:  # the first processor's model name and ISA flags
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    cpu = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if line.strip() == "":  # end of the first processor's block
                    break
    except OSError:
        pass
    info: Dict[str, object] = {
        "cpu": cpu,
        "isa": sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> List[float]:
    """Wall-clock seconds of ``fn()`` for ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def median(values: List[float]) -> float:
    return statistics.median(values)


def write_results(name: str, settings: Dict[str, object], results: object) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "settings": settings,
        "results": results,
    }
    write_json(path, payload, indent=2)
    return path
