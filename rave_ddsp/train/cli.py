"""The training command line: LightningCLI over :class:`RAVE` and :class:`AudioDataModule`.

    python scripts/train.py --config configs/v2.yaml --data.path DB_OR_AUDIO_DIR --name RUN \\
        [--config overlay.yaml] [--section.key value ...] [--ckpt_path last|FILE]

A run lives in ``<runs_root>/<name>/``: ``config.yaml`` (the resolved configuration),
``checkpoints/`` (``last.ckpt``, always the latest step, and periodic ones) and the
TensorBoard logs. Resume a run with its own configuration: ``--config runs/RUN/config.yaml
--ckpt_path last``. A new run never writes into an existing one: it stops unless it resumes
(``--ckpt_path``) or replaces it (``--overwrite``). A run that fails before its first
checkpoint leaves nothing behind (a replaced run is put back).
"""
import math
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Union

import yaml
from jsonargparse import ActionYesNo, ArgumentParser

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from rave_ddsp.train.callbacks import InterruptCheckpoint, MediaLogger, ReconstructionReport, interrupted_message
from rave_ddsp.train.checkpoint import check_fits, read_checkpoint
from rave_ddsp.data.module import AudioDataModule
from rave_ddsp.errors import UserError
from rave_ddsp.train.model import RAVE

TRAINER_DEFAULTS = {
    "max_steps": 6_000_000,
    "log_every_n_steps": 50,
    "val_check_interval": 5000,
    "check_val_every_n_epoch": None,
    "num_sanity_val_steps": 0,
}


class TrainingCLI(LightningCLI):
    """LightningCLI with run folders, data/model links and resume by ``--ckpt_path``."""

    def __init__(self, args: Optional[List[str]] = None):
        avoid_amx_bf16_kernels()
        super().__init__(
            RAVE,
            AudioDataModule,
            run=False,
            args=args,
            trainer_defaults=TRAINER_DEFAULTS,
            save_config_kwargs={"overwrite": True, "config_filename": "config.yaml"},
            parser_kwargs={"description": __doc__},
            auto_configure_optimizers=False,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str, default="default", help="run name: outputs go to <runs_root>/<name>/")
        parser.add_argument("--runs_root", type=str, default="runs", help="folder holding the runs")
        parser.add_argument("--ckpt_path", type=Optional[str], default=None,
                            help="resume: 'last' (the run's last.ckpt) or a checkpoint file")
        parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                            help="replace an existing run of this name (its checkpoints and logs are deleted "
                                 "once the new run saves its first checkpoint)")
        parser.add_argument("--checkpoint_every", type=int, default=10000,
                            help="also keep a checkpoint every N steps (last.ckpt is rewritten at each of them)")
        parser.link_arguments("model.sample_rate", "data.sample_rate")
        parser.link_arguments("model.channels", "data.channels")

    @property
    def run_dir(self) -> Path:
        return Path(self.config.runs_root) / self.config.name

    def before_instantiate_classes(self) -> None:
        """Refuse to start a new run in the folder of an existing one (before anything is written)."""
        if rank_zero_only.rank != 0 or self.config.ckpt_path is not None or self.config.overwrite:
            return  # DDP workers start once the main process has begun the run
        if run_exists(self.run_dir):
            config = self.run_dir / "config.yaml"
            raise UserError(f"{self.run_dir}: a run named {self.config.name!r} already exists; nothing was changed. "
                            f"Resume it with --config {config} --ckpt_path last, start a new run with another "
                            "--name, or replace it with --overwrite")

    def instantiate_trainer(self, **kwargs):
        run_dir = self.run_dir
        checkpoints = run_dir / "checkpoints"
        ours: List[Callback] = [
            # no version counter: last.ckpt is overwritten, never joined by last-v1.ckpt
            ModelCheckpoint(dirpath=str(checkpoints), filename="step-{step}", save_last=True, save_top_k=-1,
                            every_n_train_steps=self.config.checkpoint_every, auto_insert_metric_name=False,
                            enable_version_counter=False),
            InterruptCheckpoint(str(checkpoints)),
            MediaLogger(),
            ReconstructionReport(),
        ]
        user_callbacks = self.config_init.get("trainer", {}).get("callbacks") or []
        if self.config_init.get("trainer", {}).get("strategy") == "ddp":
            # Each phase leaves some parameters without gradients (the discriminator in phase 1,
            # the frozen encoder in phase 2), which plain DDP refuses.
            kwargs["strategy"] = DDPStrategy(find_unused_parameters=True)
        logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="", default_hp_metric=False)
        return super().instantiate_trainer(default_root_dir=str(run_dir), logger=logger,
                                           callbacks=list(user_callbacks) + ours, **kwargs)

    def resolve_ckpt_path(self) -> Optional[str]:
        path = self.config.ckpt_path
        if path is None:
            return None
        if path == "last":
            path = str(self.run_dir / "checkpoints" / "last.ckpt")
        if not Path(path).is_file():
            raise UserError(f"cannot resume: no checkpoint at {path}")
        return path

    def check(self) -> None:
        hop = self.model.hop_length
        if self.datamodule.n_signal % hop:
            raise UserError(f"data.n_signal = {self.datamodule.n_signal} must be a multiple of the model's hop length "
                            f"{hop} (n_bands * prod(ratios)); try {max(hop, self.datamodule.n_signal // hop * hop)}")

    def fit(self) -> None:
        self.check()
        ckpt_path = self.resolve_ckpt_path()
        if ckpt_path is not None:
            check_fits(read_checkpoint(ckpt_path), self.model, ckpt_path)
        # config.yaml is the run's own: resuming with it, or starting from it, must not replay these
        self.config.ckpt_path, overwrite, self.config.overwrite = None, self.config.overwrite, False
        if self.model.discrete:
            q = self.model.quantizer
            print(f"discrete codes: {q.n_codebooks} codebooks x {math.log2(q.codebook_size):g} bits at "
                  f"{self.model.hparams.sample_rate / self.model.hop_length:.2f} frames/s = "
                  f"{self.model.bitrate / 1000:.2f} kbps "
                  f"({self.model.bitrate / q.n_codebooks / 1000:.2f} kbps per codebook)",
                  flush=True)
        with run_folder(self.run_dir, replace=overwrite and ckpt_path is None), \
                stop_on_first_sigint(self.trainer) as interrupted:
            self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        if interrupted.is_set():
            print(interrupted_message(self.trainer.global_step, self.run_dir / "checkpoints" / "last.ckpt"))
            raise SystemExit(1)


@contextmanager
def stop_on_first_sigint(trainer) -> Iterator[threading.Event]:
    """Inside the block, Ctrl-C asks training to stop after the current step (Lightning's
    ``should_stop``; ``last.ckpt`` is then saved at that step) and sets the yielded event; a
    second Ctrl-C interrupts at once. A KeyboardInterrupt raised at an arbitrary point (e.g.
    inside the TensorBoard writer's lock) could leave the shutdown hanging. Main thread only."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def handler(signum, frame) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        trainer.should_stop = True
        print("\nCtrl-C: stopping after this step (press it again to stop at once)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def run_exists(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run (a configuration, checkpoints or logs)."""
    return run_dir.is_dir() and any(run_dir.iterdir())


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.ckpt"))


@contextmanager
def run_folder(run_dir: Path, replace: bool) -> Iterator[None]:
    """Keep ``run_dir`` only if the training inside saves a checkpoint.

    A folder created here is removed when training fails (or is interrupted) before its first
    checkpoint. With ``replace``, an existing run is set aside first, deleted once the new run
    has a checkpoint, and put back otherwise.
    """
    if rank_zero_only.rank != 0:
        yield
        return
    created = not run_exists(run_dir)
    aside = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
    if replace and not created:
        run_dir.rename(aside)
        created = True
    try:
        yield
    finally:
        if has_checkpoint(run_dir):
            shutil.rmtree(aside, ignore_errors=True)
        elif created:
            shutil.rmtree(run_dir, ignore_errors=True)
            if aside.exists():
                aside.rename(run_dir)


def avoid_amx_bf16_kernels() -> None:
    """Keep oneDNN's bf16 convolutions off Intel AMX (unless ``ONEDNN_MAX_CPU_ISA`` is already set).

    oneDNN up to 3.14 (torch 2.14 bundles 3.12) reads past the end of the reduction axis in its
    AMX bf16 kernels when that axis is not a multiple of 32 (uxlfoundation/oneDNN#5717, fixed
    by #5723): stray NaN bytes next to a tensor then poison its gradient, so bf16-mixed training
    on such CPUs stopped on a NaN gradient norm depending on what memory held. The cap keeps
    bf16 on the AVX-512 kernels; float32 never uses AMX, and CPUs without AMX are unaffected.
    oneDNN reads the variable once, at its first primitive: call this before any computation.
    """
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")


def model_from_config(*paths: Union[str, Path], **overrides) -> RAVE:
    """The model of one or more config files (later ones override earlier ones), then ``overrides``.

    Builds only the ``model`` section (no data, no trainer): for benchmarks, checks and tests.
    """
    merged = {}
    for path in paths:
        merged.update(yaml.safe_load(Path(path).read_text()).get("model") or {})
    merged.update(overrides)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RAVE, "model", fail_untyped=False)
    return parser.instantiate_classes(parser.parse_object({"model": merged})).model
