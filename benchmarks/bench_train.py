"""Training speed: steps/s and peak memory per config, phase and thread count (or GPU precision).

    python -m benchmarks.bench_train [--configs demo small v2] [--threads 1 2] [--steps 5]
    python -m benchmarks.bench_train --configs v2 --steps 2 --warmup 1 --append     # adds v2 rows to the file
    python -m benchmarks.bench_train --configs v2 --gpu --precisions 32-true bf16-mixed   # on a GPU
    python -m benchmarks.bench_train --configs small --phases 2 --discriminator-crops config none --rounds 3

Each measurement runs in its own process (so peak memory is its own): the config's model
at the config's batch size and crop length, trained by Lightning on random audio for
``--warmup`` steps, then timed over ``--steps`` steps (median step time). Phase 2 is
measured by starting at ``phase2_step = 0``, with the config's ``discriminator_crop`` or, per
``--discriminator-crops``, none (the discriminators judge the whole crop) or a number of samples;
``--rounds`` repeats every measurement, alternating which goes first. CPU peak memory is the process's maximum RSS;
GPU peak memory is torch's ``max_memory_allocated``. Results: benchmarks/results/train.json
(or train_gpu.json).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import RESULTS_DIR, alternating, write_results

ROOT = Path(__file__).resolve().parents[1]


def measure(config: str, threads: int, phase: int, steps: int, warmup: int, gpu: bool, precision: str,
            discriminator_crop: str = "config") -> dict:
    """One measurement, in this process."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from rave_ddsp.train.cli import model_from_config

    torch.set_num_threads(threads)
    path = ROOT / "configs" / f"{config}.yaml"
    overrides = {} if discriminator_crop == "config" else {
        "discriminator_crop": None if discriminator_crop == "none" else int(discriminator_crop)}
    model = model_from_config(path, phase2_step=0 if phase == 2 else 10 ** 9, **overrides)
    data = yaml.safe_load(path.read_text())["data"]
    batch, length = data["batch_size"], data["n_signal"]
    audio = [0.1 * torch.randn(model.hparams.channels, length) for _ in range(batch * (steps + warmup))]
    times = []

    class Timer(L.Callback):
        def on_train_batch_start(self, *args):
            if gpu:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    trainer = L.Trainer(max_steps=steps + warmup, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Timer()],
                        accelerator="gpu" if gpu else "cpu", devices=1, precision=precision)
    trainer.fit(model, DataLoader(audio, batch_size=batch, shuffle=False, num_workers=0))
    step = statistics.median(times[warmup:])
    peak = (torch.cuda.max_memory_allocated() / 2 ** 30 if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
    return {"config": config, "phase": phase, "threads": threads, "precision": precision,
            "discriminator_crop": model.hparams.discriminator_crop, "batch": batch, "n_signal": length,
            "median_step_s": step, "steps_per_s": 1 / step,
            "mean_step_s": statistics.fmean(times[warmup:]),
            "peak_memory_gib": peak, "timed_steps": len(times) - warmup, "warmup_steps": warmup}


def _key(row: dict) -> tuple:
    # phase 1 runs no discriminator; rows written before --discriminator-crops have no such field
    crop = row.get("discriminator_crop") if row["phase"] == 2 else None
    return row["config"], row["phase"], row["threads"], row["precision"], crop


def previous_rows(name: str) -> list:
    """The rows of an earlier results file (empty when there is none)."""
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text())["results"] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["demo", "small", "v2"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--phases", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="measure on CUDA (threads ignored)")
    parser.add_argument("--precisions", nargs="+", default=["32-true"])
    parser.add_argument("--discriminator-crops", nargs="+", default=["config"],
                        help="'config' (the config's discriminator_crop), 'none' or samples; phase 2 only")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each case this many times, alternating the order (one row per measurement)")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in the results file that this run does not re-measure")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement as JSON
    args = parser.parse_args()
    if args.one:
        config, threads, phase, precision, crop = args.one.split(",")
        print(json.dumps(measure(config, int(threads), int(phase), args.steps, args.warmup, args.gpu, precision,
                                 crop)))
        return
    rows = []
    threads = [1] if args.gpu else args.threads
    cases = [(config, precision, thread_count, phase, crop)
             for config in args.configs for precision in args.precisions for thread_count in threads
             for phase in args.phases for crop in (args.discriminator_crops if phase == 2 else ["config"])]
    for config, precision, thread_count, phase, crop in alternating(cases, args.rounds):
        one = f"{config},{thread_count},{phase},{precision},{crop}"
        command = [sys.executable, "-m", "benchmarks.bench_train", "--one", one, "--steps",
                   str(args.steps), "--warmup", str(args.warmup)] + (["--gpu"] if args.gpu else [])
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if result.returncode:
            print(result.stderr[-2000:], file=sys.stderr)
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{config:6s} phase {phase} {precision:10s} threads {thread_count} discriminator crop "
              f"{row['discriminator_crop']}: {row['steps_per_s']:.3f} steps/s, "
              f"peak {row['peak_memory_gib']:.2f} GiB", flush=True)
    name = "train_gpu" if args.gpu else "train"
    if args.append:
        measured = {_key(row) for row in rows}
        rows = [row for row in previous_rows(name) if _key(row) not in measured] + rows
    path = write_results(name, {"data": "random audio, config batch/crop",
                                "timed": "median step time over timed_steps after warmup_steps (per row)"}, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
