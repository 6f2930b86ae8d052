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
from typing import Callable, Dict, Iterator, List, Sequence, TypeVar

import torch

from rave_ddsp.analysis.evaluation import cpu_description
from rave_ddsp.files import write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> Dict[str, object]:
    """Describe the machine the numbers were measured on."""
    cpu, isa = cpu_description()
    info: Dict[str, object] = {
        "cpu": cpu,
        "isa": isa,
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


Case = TypeVar("Case")


def alternating(cases: Sequence[Case], rounds: int) -> Iterator[Case]:
    """``cases`` once per round, the order reversed every other round (a shared machine's load falls on all alike)."""
    for r in range(rounds):
        yield from (cases if r % 2 == 0 else cases[::-1])
