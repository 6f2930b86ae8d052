"""The training command line: LightningCLI over :class:`RAVE` and :class:`AudioDataModule`.

    python scripts/train.py --config configs/v2.yaml --data.path DB_OR_AUDIO_DIR --name RUN \\
        [--config overlay.yaml] [--section.key value ...] [--ckpt_path last|FILE]

A run lives in ``<runs_root>/<name>/``: ``config.yaml`` (the resolved configuration),
``checkpoints/`` (``last.ckpt`` and periodic ones) and the TensorBoard logs. Resume a run
with its own configuration: ``--config runs/RUN/config.yaml --ckpt_path last``.
"""
from pathlib import Path
from typing import List, Optional, Union

import yaml
from jsonargparse import ArgumentParser

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from rave_ddsp.callbacks import InterruptCheckpoint, MediaLogger, ReconstructionReport
from rave_ddsp.data import AudioDataModule
from rave_ddsp.errors import UserError
from rave_ddsp.model import RAVE

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
        parser.add_argument("--checkpoint_every", type=int, default=10000,
                            help="also keep a checkpoint every N steps (last.ckpt is rewritten at each of them)")
        parser.link_arguments("model.sample_rate", "data.sample_rate")
        parser.link_arguments("model.channels", "data.channels")

    @property
    def run_dir(self) -> Path:
        return Path(self.config.runs_root) / self.config.name

    def instantiate_trainer(self, **kwargs):
        run_dir = self.run_dir
        checkpoints = run_dir / "checkpoints"
        ours: List[Callback] = [
            ModelCheckpoint(dirpath=str(checkpoints), filename="step-{step}", save_last=True, save_top_k=-1,
                            every_n_train_steps=self.config.checkpoint_every, auto_insert_metric_name=False),
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
        self.trainer.fit(self.model, datamodule=self.datamodule, ckpt_path=self.resolve_ckpt_path())


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
