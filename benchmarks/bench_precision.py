"""Offline encode+decode with ``--precision bf16`` against float32 and the official RAVE v2, 1 CPU thread.

    bash benchmarks/setup_rave_venv.sh          # once: the official RAVE in .cache/rave-venv
    python -m benchmarks.bench_precision [--config configs/v2.yaml] [--calls 7] [--more 2,1 1,8 2,8] [--reuse]

What the scripts' ``--precision bf16`` (reconstruct.py, evaluate.py, ...: a run folder or checkpoint
with :func:`rave_ddsp.runtime.inference.to_bfloat16`) buys on this CPU. One process, untrained
weights (speed does not depend on them), ``forward`` (encode+decode) of ~10 s of test signal,
alternated call by call (the order reversed every other round) between:

* ``rave``: the official RAVE v2 2.3.1's offline export, float32 (as its users run it);
* ``ours_ts``: this project's offline export of ``--config``, float32 (a ``.ts`` --model, nn~);
* ``ours_32``: the same weights as the scripts run a run folder (eager, float32);
* ``ours_bf16``: the same with its convolution stacks in bfloat16;
* ``rave_autocast``: RAVE's export under ``torch.autocast("cpu", torch.bfloat16)``, for reference only:
  what RAVE would gain from bfloat16 too (its scripts have no such option).

then the same with more threads and batches (``--more THREADS,BATCH ...``). Also the output's
deviation, ``ours_bf16`` from ``ours_32`` (relative RMS error, dB). Quality on trained models is
measured with ``scripts/evaluate.py --precision`` (README, "Benchmarks"). Writes
``benchmarks/results/precision.json`` (``--output NAME``: ``NAME.json``); RAVE's exports are shared with
:mod:`benchmarks.compare_rave`. A CPU without bfloat16 arithmetic can be imitated with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (recorded in the settings).
"""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Dict

import torch

from benchmarks.bench_stream import load_model_args, offline_input
from benchmarks.common import write_results
from benchmarks.compare_rave import REPO, export_rave, interleaved_offline, threads_batch


def our_modules(config: Path, seed: int = 0) -> Dict[str, torch.nn.Module]:
    """``ours_ts``, ``ours_32`` and ``ours_bf16``: one untrained model of ``config`` three ways."""
    from rave_ddsp.runtime.export import build
    from rave_ddsp.runtime.inference import to_bfloat16
    from rave_ddsp.train.model import RAVE

    modules = {}
    for name in ("ours_ts", "ours_32", "ours_bf16"):
        torch.manual_seed(seed)
        module = build(RAVE(**load_model_args(config), streaming=False).eval(), 128, script=name == "ours_ts")
        if name == "ours_bf16":
            to_bfloat16(module)
        modules[name] = module.eval()
    return modules


class Autocast(torch.nn.Module):
    """``inner`` (an export) called under ``torch.autocast("cpu", torch.bfloat16)``."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.decode_params = inner.decode_params  # what compare_rave.interleaved_offline reads the hop from

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(x)


def deviation_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    """``20 log10(rms(other - reference) / rms(reference))``."""
    return float(20 * torch.log10((other.float() - reference).norm() / reference.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/v2.yaml"))
    parser.add_argument("--calls", type=int, default=7, help="timed calls per case, 1 thread, batch 1 (default 7)")
    parser.add_argument("--more", type=threads_batch, nargs="*", default=[(2, 1), (1, 8), (2, 8)],
                        metavar="THREADS,BATCH", help="further settings (default 2,1 1,8 2,8; none: skip)")
    parser.add_argument("--more-calls", type=int, default=3, help="timed calls per case for those (default 3)")
    parser.add_argument("--export-dir", type=Path, default=REPO / ".cache" / "bench_exports")
    parser.add_argument("--reuse", action="store_true", help="reuse RAVE's exports already in --export-dir")
    parser.add_argument("--output", default="precision", help="results name (default precision)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    args.export_dir.mkdir(parents=True, exist_ok=True)

    rave_paths = export_rave(args.export_dir, args.reuse)
    rave = torch.jit.load(str(rave_paths["offline"])).eval()
    ours = our_modules(args.config)
    models = {"rave": rave, **ours, "rave_autocast": Autocast(rave)}
    x = offline_input(int(ours["ours_32"].hop_length))
    with torch.no_grad():
        deviation = deviation_db(ours["ours_32"](x), ours["ours_bf16"](x))
    runs = [{"threads": 1, "batch": 1, "cases": interleaved_offline(models, args.calls, count=False)}]
    for threads, batch in args.more:
        torch.set_num_threads(threads)
        runs.append({"threads": threads, "batch": batch,
                     "cases": interleaved_offline(models, args.more_calls, batch, count=False)})
        torch.set_num_threads(1)
    for run in runs:
        rave_s = run["cases"]["rave"]["median_s"]
        run["speedup_over_rave"] = {name: rave_s / stats["median_s"] for name, stats in run["cases"].items()}
    settings = {
        "config": str(args.config), "rave": f"acids-rave=={rave_paths['rave_version']} (v2.gin, scripts/export.py)",
        "calls": args.calls, "more_calls": args.more_calls, "weights": "untrained (random init)", "cases": {
            "rave": "official RAVE v2 offline export, float32", "ours_ts": "our offline export, float32",
            "ours_32": "eager (as scripts run a run folder), float32",
            "ours_bf16": "eager, convolution stacks in bfloat16 (--precision bf16)",
            "rave_autocast": "RAVE's export under torch.autocast(bfloat16): reference only"},
        "timed": "forward() (encode+decode) of one signal per call, cases alternated call by call",
        "isa_caps": {name: os.environ.get(name) for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")},
    }
    path = write_results(args.output, settings, {"bf16_deviation_from_32_db": deviation, "runs": runs})
    print(f"ours_bf16 vs ours_32 output: {deviation:.1f} dB (relative RMS error)")
    for run in runs:
        cells = "  ".join(f"{name} {stats['median_s']:.3f} s ({run['speedup_over_rave'][name]:.2f}x)"
                          for name, stats in run["cases"].items())
        print(f"{run['threads']} thread(s), batch {run['batch']}: {cells}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
