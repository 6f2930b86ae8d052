"""Train the official RAVE (PyPI acids-rave==2.3.1) for a wall-clock budget, as a quality baseline.

Runs in RAVE's own venv (RAVE is CC BY-NC: it is installed and run for measurement only, none
of its code is in this repository; ``bash benchmarks/setup_rave_venv.sh``). From the repo root:

    .cache/rave-venv/bin/python -m benchmarks.train_rave_baseline --data DIR --minutes M --output OUT_DIR
        [--config v2_small] [--overlay causal] [--batch 8] [--n-signal 32768] [--threads 2] [--seed 0]

What runs is RAVE's own: ``rave.RAVE`` built from one of its gin configs, its ``training_step``
driven by pytorch_lightning's Trainer with the callbacks ``rave train`` installs (phase-1
warm-up, quantizer warm-up, KL-weight warm-up), on CPU with ``torch.set_num_threads(threads)``.

* **Phase 1 only.** The Trainer stops at ``max_time`` = M minutes after training starts
  (Lightning's Timer: the sanity check, set-up and export not counted) or at ``max_steps`` =
  the config's ``phase_1_duration`` (1,000,000 steps in every v2 config), whichever comes
  first, so the adversarial phase never starts; the script checks that it did not.
* **Data.** The audio files under DIR are decoded by :mod:`rave_ddsp.data.store` (soundfile,
  mono, resampled to the model's rate, clipped to [-1, 1]), concatenated, and stored as int16
  ``floor(x * 32767)`` as RAVE's preprocess does (its lmdb and ffmpeg are not used). Training
  crops of n_signal samples start uniformly anywhere in the concatenation, as this project's
  own training crops do (RAVE's loader crops inside 2 * 131072-sample chunks of each file and
  drops each file's remainder).
* **Augmentations:** RAVE's default pipeline as ``rave train`` applies it with no
  ``--augment``: its random phase mangle (a random all-pass biquad, p = 0.8) and its 16-bit
  dequantization noise, both RAVE's own functions. No gain, pitch or other augmentation.
* **Valid-signal crop.** v2 configs score the reconstruction only where the receptive field
  is complete; when what is left of an n_signal crop is too short for RAVE's multiband STFTs
  (v2_small: below about 37,000 samples, so at the default 32,768), ``RAVE.valid_signal_crop`` is
  bound to False, said on stdout and recorded in ``config.gin`` and the summary.
* **Validation** (RAVE fits the latent PCA, the fidelity curve and its receptive field there):
  VAL_CROPS crops at fixed offsets spread over the same audio, through the same transforms,
  in the Trainer's sanity check, every ``--val-every`` steps and when training stops, so the
  checkpoint holds a PCA of the weights it saves.

Writes into OUT_DIR (new or empty): ``config.gin`` (gin's operative config, as ``rave train``
writes it), ``version_0/checkpoints/last.ckpt``, ``rave.ts`` (non-streaming, by RAVE's own
``scripts/export.py``), ``metrics.jsonl`` (the logged losses) and ``train_summary.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # lightning_fabric's pkg_resources deprecation
    import gin
    import pytorch_lightning as pl
    from pytorch_lightning.loggers.logger import DummyLogger

    import rave
    import rave.core
    import rave.model
    from rave import dataset, transforms

from benchmarks.bench_rave_baseline import export_run, parse_rave_config, rave_version
from benchmarks.common import machine
from rave_ddsp.data.store import open_audio_folder
from rave_ddsp.files import write_json

DEFAULT_CONFIG = "v2_small"
NAME = "rave"  # the export is OUT_DIR/rave.ts
PCM_SCALE = 2**15 - 1  # RAVE's preprocess stores int16 floor(x * 32767); its loader divides by 32767
VAL_CROPS = 64  # enough latent frames for RAVE's 128-dimensional PCA at any n_signal >= 4096
VAL_EVERY = 10000  # steps between validations: ``rave train``'s --val_every default
LOG_EVERY = 50  # steps between logged losses (Lightning's default)
AMX_FLAGS = {"amx_tile", "amx_bf16", "amx_int8"}

Transform = Callable[[np.ndarray], np.ndarray]


def rave_default_transforms(sample_rate: int) -> Transform:
    """RAVE's ``dataset.get_dataset`` transforms after its random crop: ``[C, T] -> [C, T]`` float32.

    Its resampling step is left out (the audio is decoded at the model's rate already).
    """
    return transforms.Compose([
        transforms.RandomApply(lambda x: dataset.random_phase_mangle(x, 20, 2000, .99, sample_rate), p=.8),
        transforms.Dequantize(16),
        lambda x: x.astype(np.float32),
    ])


def load_pcm(data: Path, sample_rate: int) -> np.ndarray:
    """Every audio file under ``data``, mono at ``sample_rate``, concatenated: int16 ``[T]``."""
    source = open_audio_folder(data, sample_rate, channels=1, max_cache_mb=math.inf)  # [1, T] float32 in memory
    return np.floor(source.audio[0] * PCM_SCALE).astype(np.int16)


def crop(pcm: np.ndarray, start: int, n_signal: int) -> np.ndarray:
    """float ``[1, n_signal]`` from ``start`` (zeros past the end), at RAVE's loader's scale."""
    x = np.zeros((1, n_signal), np.float32)
    frames = pcm[start : start + n_signal]
    x[0, : len(frames)] = frames / PCM_SCALE
    return x


class RandomCrops(Dataset):
    """``length`` crops ``[1, n_signal]`` per epoch at uniform random offsets (numpy's global RNG)."""

    def __init__(self, pcm: np.ndarray, n_signal: int, length: int, transform: Transform) -> None:
        self.pcm, self.n_signal, self.length, self.transform = pcm, n_signal, length, transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> np.ndarray:
        start = np.random.randint(0, max(len(self.pcm) - self.n_signal, 0) + 1)
        return self.transform(crop(self.pcm, start, self.n_signal))


class FixedCrops(Dataset):
    """``count`` crops ``[1, n_signal]`` at offsets spread evenly over the audio."""

    def __init__(self, pcm: np.ndarray, n_signal: int, count: int, transform: Transform) -> None:
        self.pcm, self.n_signal, self.transform = pcm, n_signal, transform
        self.starts = np.round(np.linspace(0, max(len(pcm) - n_signal, 0), count)).astype(int)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.transform(crop(self.pcm, int(self.starts[index]), self.n_signal))


class MetricsLog(DummyLogger):
    """Appends each logged step's metrics to ``path`` (JSON lines), prints them, keeps the latest of each.

    RAVE's module writes text and audio to ``logger.experiment`` (TensorBoard in ``rave train``,
    not installed here); the DummyLogger it extends answers those calls and does nothing.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self.latest = path, {}

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        values = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        self.latest.update(values)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)


class Clock(pl.Callback):
    """Counts training steps and times them: from the start of training to the end of the last
    step, less the validation passes in between."""

    def __init__(self) -> None:
        self.steps, self.first_step_s, self.validated_at = 0, 0.0, -1
        self.start = self.end = self.validation_start = 0.0
        self.validation_s = self.validation_s_at_end = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.end = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        self.end = time.perf_counter()
        self.validation_s_at_end = self.validation_s
        if self.steps == 1:
            self.first_step_s = self.end - self.start

    def on_validation_start(self, trainer, pl_module) -> None:
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validation_s += time.perf_counter() - self.validation_start
            self.validated_at = self.steps

    @property
    def train_seconds(self) -> float:
        return self.end - self.start - self.validation_s_at_end


def valid_crop_fits(model: rave.RAVE, n_signal: int) -> bool:
    """Whether RAVE's multiband distance accepts an ``n_signal`` crop cut down by its valid-signal crop.

    ``RAVE.training_step`` crops the multiband signals by the receptive field (found by RAVE's
    sanity-check validation before training) and takes STFTs of up to 2048 frames of what is
    left; reflection padding fails when fewer than 1025 frames remain. Sets
    ``model.receptive_field`` as the sanity check would.
    """
    model.receptive_field.copy_(torch.tensor(rave.core.get_rave_receptive_field(model, n_channels=1)))
    with torch.no_grad():
        _, x = model.encode(torch.zeros(1, 1, n_signal), return_mb=True)  # [1, M, n_signal / M]
        x = rave.core.valid_signal_crop(x, *model.receptive_field)
        try:
            model.multiband_audio_distance(x, x)
        except RuntimeError:
            return False
    return True


def check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"--output {out}: expected a new or empty folder")


def isa_summary() -> Dict[str, object]:
    info = machine()
    flags = set(info["isa"])
    return {"cpu": info["cpu"], "avx512f": "avx512f" in flags, "amx": bool(flags & AMX_FLAGS),
            "isa": info["isa"], "logical_cores": info["logical_cores"]}


def train(args: argparse.Namespace) -> Dict[str, object]:
    """Train, validate, checkpoint and export into ``args.output``; returns the summary."""
    started = time.time()
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")  # as ``rave train`` sets it

    def build() -> rave.RAVE:
        pl.seed_everything(args.seed)  # torch, numpy and random: weights, crops and RAVE's transforms
        return rave.RAVE(n_channels=1)

    parse_rave_config(args.config, *args.overlay)
    gin.bind_parameter("RAVE.n_channels", 1)  # as ``rave train`` binds it (mono)
    model = build()
    valid_crop_note = None
    if model.valid_signal_crop and not valid_crop_fits(model, args.n_signal):
        valid_crop_note = (f"RAVE's valid-signal crop (receptive field {int(model.receptive_field.sum())} samples) "
                           f"leaves too few frames of a {args.n_signal}-sample crop for its multiband STFTs: "
                           "trained with RAVE.valid_signal_crop = False")
        print(valid_crop_note, flush=True)
        gin.bind_parameter("RAVE.valid_signal_crop", False)
        model = build()
    phase_1_steps = int(model.warmup)
    warmup = rave.model.WarmupCallback()
    clock = Clock()
    callbacks = [warmup, rave.model.QuantizeCallback(), rave.model.BetaWarmupCallback(), clock]

    pcm = load_pcm(args.data, model.sr)
    transform = rave_default_transforms(model.sr)
    crops_per_epoch = max(len(pcm) // args.n_signal, args.batch)
    train_loader = DataLoader(RandomCrops(pcm, args.n_signal, crops_per_epoch, transform), args.batch,
                              drop_last=True)
    val_loader = DataLoader(FixedCrops(pcm, args.n_signal, VAL_CROPS, transform), args.batch)

    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "config.gin").write_text(gin.operative_config_str())
    logger = MetricsLog(args.output / "metrics.jsonl")
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
                         max_time=timedelta(minutes=args.minutes), max_steps=phase_1_steps, max_epochs=-1,
                         val_check_interval=args.val_every, check_val_every_n_epoch=None,
                         log_every_n_steps=LOG_EVERY, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(args.output))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")  # crops are cut in the main process
        trainer.fit(model, train_loader, val_loader)
        if clock.validated_at != clock.steps:  # Lightning validates on max_time, not on max_steps
            trainer.validate(model, val_loader, verbose=False)
    steps = warmup.state["training_steps"]
    if model.warmed_up or steps >= phase_1_steps:
        raise SystemExit(f"training reached phase 2 (step {steps} of phase_1_duration {phase_1_steps})")

    checkpoint = args.output / "version_0" / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(str(checkpoint))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    exported = export_run(args.output, args.output, NAME, streaming=False, env=env)
    fidelity = model.fidelity.numpy()
    later = (clock.train_seconds - clock.first_step_s) / max(steps - 1, 1)
    return {
        "config": args.config, "overlays": args.overlay, "steps": steps, "train_seconds": round(clock.train_seconds, 1),
        "steps_per_s": round(steps / clock.train_seconds, 3), "first_step_s": round(clock.first_step_s, 2),
        "steps_per_s_after_first": round(1 / later, 3), "total_seconds": round(time.time() - started, 1),
        "minutes": args.minutes, "phase_1_duration": phase_1_steps, "batch": args.batch,
        "n_signal": args.n_signal, "threads": args.threads, "seed": args.seed,
        "data": {"path": str(args.data), "seconds": round(len(pcm) / model.sr, 1), "sample_rate": model.sr},
        "valid_signal_crop": bool(model.valid_signal_crop), "valid_signal_crop_note": valid_crop_note,
        "augmentations": "RAVE's defaults: random_phase_mangle(20-2000 Hz, pole 0.99, p=0.8), Dequantize(16)",
        "latest_metrics": logger.latest, "latent_dims_kept": int(max(np.argmax(fidelity > .95), 1)),
        "checkpoint": str(checkpoint), "export": str(exported),
        "torch": torch.__version__, "acids_rave": rave_version(), "pytorch_lightning": pl.__version__,
        "machine": isa_summary(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of audio files (searched recursively)")
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    parser.add_argument("--output", type=Path, required=True, help="run folder to create (new or empty)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="one of RAVE's gin configs, without .gin")
    parser.add_argument("--overlay", action="append", default=[],
                        help="a RAVE gin config parsed after --config (repeatable), e.g. causal")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-signal", type=int, default=32768, help="samples per training crop")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=VAL_EVERY, help="steps between validation passes")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: not a folder")
    if args.minutes <= 0:
        raise SystemExit(f"--minutes {args.minutes}: expected > 0")
    check_output(args.output)
    summary = train(args)
    path = args.output / "train_summary.json"
    write_json(path, summary, indent=2)
    print(f"{summary['steps']} steps in {summary['train_seconds']} s ({summary['steps_per_s']} steps/s) -> "
          f"{summary['export']}, {path}")


if __name__ == "__main__":
    main()
