"""Training throughput side by side: the official RAVE 2.3.1's own ``training_step`` and ours.

    bash benchmarks/setup_rave_venv.sh          # once: the official RAVE in .cache/rave-venv
    python -m benchmarks.bench_train_vs_rave [--pairs small:v2_small v2:v2] [--phases 1 2]
        [--threads 1] [--steps 4] [--warmup 1] [--rounds 2]

Each pair names one of our configs and one of RAVE's gin configs, trained at our config's batch
and crop on random audio (speed does not depend on the data). Every measurement runs in a fresh
process, one after the other, alternating which side goes first from round to round:

* ours: :func:`benchmarks.bench_train.measure` (our Lightning module, its ``training_step``);
* RAVE: in RAVE's venv (this module with ``--rave-one``), ``rave.RAVE`` built from its gin config
  as ``rave train`` builds it, with ``warmed_up`` set for phase 2, its own ``training_step``
  driven by pytorch_lightning's Trainer on CPU. Where RAVE's valid-signal crop leaves too little
  of the crop for its multiband STFTs (v2_small at 32768 samples) it is switched off, as
  :mod:`benchmarks.train_rave_baseline` does.

The two do different work per phase-2 step: ours updates the generator and the discriminator
at every step; RAVE updates the discriminator at one step in ``update_discriminator_every`` (2
in v2_small, 4 in v2) and the generator at the others. So besides seconds per step the table
gives seconds per generator update and discriminator updates per generator update. Timed steps
are rounded up to whole RAVE cycles and averaged (mean, not median: a cycle mixes both kinds).
Results: ``benchmarks/results/train_vs_rave.json`` (machine, settings, every round).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from benchmarks.common import write_results

REPO = Path(__file__).resolve().parent.parent


def rave_one(config: str, phase: int, threads: int, batch: int, n_signal: int, steps: int, warmup: int) -> dict:
    """One measurement of RAVE's ``training_step``, in RAVE's venv."""
    import warnings

    import torch
    from torch.utils.data import DataLoader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import gin
        import pytorch_lightning as pl
        import rave
        from pytorch_lightning.loggers.logger import DummyLogger  # RAVE's module writes to logger.experiment

    from benchmarks.bench_rave_baseline import parse_rave_config
    from benchmarks.train_rave_baseline import valid_crop_fits

    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("high")  # as ``rave train`` sets it
    parse_rave_config(config)
    gin.bind_parameter("RAVE.n_channels", 1)
    torch.manual_seed(0)
    model = rave.RAVE(n_channels=1)
    valid_crop = bool(model.valid_signal_crop)
    if valid_crop and not valid_crop_fits(model, n_signal):
        gin.bind_parameter("RAVE.valid_signal_crop", False)
        valid_crop = False
        torch.manual_seed(0)
        model = rave.RAVE(n_channels=1)
    model.receptive_field.copy_(torch.tensor(rave.core.get_rave_receptive_field(model, n_channels=1)))
    cycle = int(model.update_discriminator_every) if phase == 2 else 1
    timed = cycle * math.ceil(steps / cycle)
    model.warmed_up = phase == 2
    audio = [0.1 * torch.randn(1, n_signal) for _ in range(batch * (timed + warmup))]
    times: List[float] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            times.append(time.perf_counter() - self.start)

    trainer = pl.Trainer(max_steps=timed + warmup, logger=DummyLogger(), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[Timer()], accelerator="cpu", devices=1)
    trainer.fit(model, DataLoader(audio, batch_size=batch, shuffle=False, num_workers=0))
    step = statistics.fmean(times[warmup:])
    generator_updates = (cycle - 1) / cycle if phase == 2 else 1.0
    return {"side": "rave", "config": config, "phase": phase, "threads": threads, "batch": batch,
            "n_signal": n_signal, "mean_step_s": step, "steps_per_s": 1 / step,
            "generator_updates_per_step": generator_updates,
            "discriminator_updates_per_step": 1 / cycle if phase == 2 else 0.0,
            "s_per_generator_update": step / generator_updates, "valid_signal_crop": valid_crop,
            "torch": torch.__version__, "pytorch_lightning": pl.__version__,
            "timed_steps": len(times) - warmup, "warmup_steps": warmup}


def ours_one(config: str, phase: int, threads: int, steps: int, warmup: int) -> dict:
    import torch

    from benchmarks.bench_train import measure

    row = measure(config, threads, phase, steps, warmup, gpu=False, precision="32-true")
    step = row["mean_step_s"]
    return {"side": "ours", "config": config, "phase": phase, "threads": threads, "batch": row["batch"],
            "n_signal": row["n_signal"], "mean_step_s": step, "steps_per_s": 1 / step,
            "generator_updates_per_step": 1.0, "discriminator_updates_per_step": 1.0 if phase == 2 else 0.0,
            "s_per_generator_update": step, "torch": torch.__version__, "timed_steps": row["timed_steps"],
            "warmup_steps": warmup}


def run_one(side: str, args: List[str]) -> dict:
    """One measurement in a fresh process (ours in this interpreter, RAVE's in its venv)."""
    from benchmarks.compare_rave import require_rave_venv  # not at the top: RAVE's venv imports this module

    python = sys.executable if side == "ours" else str(require_rave_venv())
    command = [python, "-W", "ignore", "-m", "benchmarks.bench_train_vs_rave", f"--{side}-one"] + args
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{side} measurement {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(rows: List[dict]) -> List[dict]:
    """Per pair and phase: medians over rounds of each side's step time and time per generator update."""
    out = []
    keys = sorted({(r["pair"], r["phase"]) for r in rows})
    for pair, phase in keys:
        cell: Dict[str, object] = {"pair": pair, "phase": phase}
        for side in ("ours", "rave"):
            mine = [r for r in rows if r["pair"] == pair and r["phase"] == phase and r["side"] == side]
            cell[f"{side}_step_s"] = statistics.median(r["mean_step_s"] for r in mine)
            cell[f"{side}_s_per_generator_update"] = statistics.median(r["s_per_generator_update"] for r in mine)
            cell[f"{side}_discriminator_updates_per_generator_update"] = (
                mine[0]["discriminator_updates_per_step"] / mine[0]["generator_updates_per_step"])
        cell["speedup_per_step"] = cell["rave_step_s"] / cell["ours_step_s"]
        cell["speedup_per_generator_update"] = (cell["rave_s_per_generator_update"]
                                                / cell["ours_s_per_generator_update"])
        out.append(cell)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", default=["small:v2_small", "v2:v2"],
                        help="OURS:RAVE config pairs (default small:v2_small v2:v2)")
    parser.add_argument("--phases", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (RAVE's rounded up to whole cycles)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ours-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rave-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--phase", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--n-signal", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_one:
        print(json.dumps(ours_one(args.config, args.phase, args.threads, args.steps, args.warmup)))
        return
    if args.rave_one:
        print(json.dumps(rave_one(args.config, args.phase, args.threads, args.batch, args.n_signal, args.steps,
                                  args.warmup)))
        return
    from benchmarks.compare_rave import require_rave_venv
    import yaml

    require_rave_venv()  # before the first measurement, not after ours

    rows = []
    common = ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for round_index in range(args.rounds):
        for pair in args.pairs:
            ours, theirs = pair.split(":")
            data = yaml.safe_load((REPO / "configs" / f"{ours}.yaml").read_text())["data"]
            for phase in args.phases:
                sides = ("ours", "rave") if round_index % 2 == 0 else ("rave", "ours")
                for side in sides:
                    extra = ["--config", ours] if side == "ours" else [
                        "--config", theirs, "--batch", str(data["batch_size"]), "--n-signal", str(data["n_signal"])]
                    row = run_one(side, extra + ["--phase", str(phase)] + common)
                    row.update({"pair": pair, "round": round_index})
                    rows.append(row)
                    print(f"round {round_index} {pair} phase {phase} {side:4s}: {row['mean_step_s']:.2f} s/step, "
                          f"{row['s_per_generator_update']:.2f} s per generator update", flush=True)
    table = summary(rows)
    for cell in table:
        print(f"{cell['pair']} phase {cell['phase']}: ours {cell['ours_step_s']:.2f} s, RAVE {cell['rave_step_s']:.2f} s "
              f"per step ({cell['speedup_per_step']:.2f}x); per generator update "
              f"{cell['speedup_per_generator_update']:.2f}x", flush=True)
    path = write_results("train_vs_rave", {
        "data": "random audio (0.1 * N(0, 1)), our config's batch and crop for both",
        "threads": args.threads, "timed_steps": args.steps, "warmup_steps": args.warmup, "rounds": args.rounds,
        "timing": "mean step time over the timed steps (RAVE's rounded up to whole discriminator cycles)"},
        {"summary": table, "rounds": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
