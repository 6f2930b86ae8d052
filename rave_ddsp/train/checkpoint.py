"""Training checkpoints: reading one with a message that says what a bad file is, and
checking that its weights fit a model before training or exporting starts.

A Lightning checkpoint is a zip archive (``torch.save``) holding ``state_dict`` and
``hyper_parameters``; anything else is named for what it is not.
"""
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Union

import torch
from torch import nn

from rave_ddsp.errors import UserError

ZIP_MAGIC = b"PK\x03\x04"


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """The checkpoint dict at ``path`` (on the CPU); :class:`UserError` if the file is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
    except OSError as error:
        raise UserError(f"{path}: cannot read this checkpoint ({error.strerror})") from None
    if head != ZIP_MAGIC:
        raise UserError(f"{path}: not a checkpoint (checkpoints are zip archives written by torch.save; "
                        "this file is not a zip archive)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: a truncated or damaged checkpoint (its zip archive is incomplete); "
                        "resume from another one (checkpoints/step-*.ckpt) with --ckpt_path FILE")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a zip archive that torch cannot read: damaged inside, or not torch's
        raise UserError(f"{path}: a zip archive, but not a readable PyTorch checkpoint "
                        f"({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise UserError(f"{path}: a PyTorch file, but not a rave_ddsp training checkpoint "
                        "(it has no state_dict and hyper_parameters)")
    return checkpoint


def differing_settings(stored: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """``"key: A in the checkpoint, B now"`` for every setting that differs (sorted by key)."""
    missing = object()
    lines = []
    for key in sorted(set(stored) | set(current)):
        before, now = stored.get(key, missing), current.get(key, missing)
        if _comparable(before) != _comparable(now):
            lines.append(f"{key}: {'(unset)' if before is missing else _comparable(before)} in the checkpoint, "
                         f"{'(unset)' if now is missing else _comparable(now)} now")
    return lines


def _comparable(value: Any) -> Any:
    """Sequences as lists, so that a tuple from a config and a list from a checkpoint compare equal."""
    return list(value) if isinstance(value, (list, tuple)) else value


def check_fits(checkpoint: Mapping[str, Any], model: nn.Module, path: Union[str, Path]) -> None:
    """Raise :class:`UserError` naming the settings that differ if the checkpoint's weights do not
    fit ``model`` (missing, unexpected or differently shaped tensors)."""
    expected = model.state_dict()
    stored = checkpoint["state_dict"]
    misfits = sorted(set(expected) ^ set(stored))
    misfits += sorted(k for k in set(expected) & set(stored) if expected[k].shape != stored[k].shape)
    if not misfits:
        return
    settings = differing_settings(checkpoint["hyper_parameters"], getattr(model, "hparams", {}))
    detail = "; ".join(settings) if settings else f"tensors that differ: {', '.join(misfits[:5])}"
    raise UserError(f"{path}: this checkpoint was trained with other model settings, its weights do not fit the "
                    f"model configured now ({detail}). Resume with the run's own configuration "
                    "(--config RUN/config.yaml), or start a new run without --ckpt_path")
