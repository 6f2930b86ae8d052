"""One way to run a trained model, from a run folder, a checkpoint or an exported ``.ts``.

Scripts that encode, decode, reconstruct, explore or evaluate take ``--model RUN_OR_TS``
and use :func:`load` to get an :class:`AutoEncoder`: ``encode(audio [B, C, T]) ->
latent [B, Z, L]`` (PCA coordinates, deterministic), ``decode(latent) -> audio`` and the
model's facts (sample rate, channels, hop, latent size, fidelity curve). Audio of any
length is padded to whole latent frames and cropped back. :func:`noise_level` switches the
filtered-noise branch for a block of code (rave_ddsp models only).
"""
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch import Tensor

from rave_ddsp.errors import UserError


class AutoEncoder:
    """A trained model ready for inference (no gradients, eval mode, deterministic encoding)."""

    def __init__(self, module, sample_rate: int, channels: int, hop_length: int, latent_size: int,
                 fidelity: Optional[Tensor], source: Path, device: torch.device):
        self.module = module
        self.sample_rate = sample_rate
        self.channels = channels
        self.hop_length = hop_length
        self.latent_size = latent_size
        self.fidelity = fidelity
        """``[Z]`` explained variance of the first k PCA dimensions (checkpoints only; None for .ts)."""
        self.source = source
        self.device = device

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    def pad(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, C, T']`` zero-padded to a whole number of latent frames."""
        frames = max(1, math.ceil(audio.shape[-1] / self.hop_length))
        return torch.nn.functional.pad(audio, [0, frames * self.hop_length - audio.shape[-1]])

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, Z, ceil(T / hop)]`` PCA coordinates."""
        return self.module.encode(self.pad(audio).to(self.device)).cpu()

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """``[B, Z, L] -> [B, C, L * hop]``."""
        if latent.shape[1] != self.latent_size:
            raise UserError(f"{self.source}: the model decodes {self.latent_size} latent dimensions, "
                            f"got {latent.shape[1]}")
        return self.module.decode(latent.to(self.device, torch.float32)).cpu()

    @torch.no_grad()
    def reconstruct(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, C, T]`` (the same length as the input)."""
        return self.decode(self.encode(audio))[..., : audio.shape[-1]]


def load(source: Union[str, Path], device: Union[str, torch.device] = "cpu") -> AutoEncoder:
    """Load a run folder, a ``.ckpt`` or a (non-streaming) exported ``.ts`` for offline inference."""
    source, device = Path(source), torch.device(device)
    if source.suffix == ".ts":
        if not source.is_file():
            raise UserError(f"{source}: no such exported model")
        try:
            module = torch.jit.load(str(source), map_location=device)
        except Exception as error:  # not a TorchScript archive, or one this torch cannot read
            raise UserError(f"{source}: cannot load this TorchScript file ({error})") from None
        if not hasattr(module, "encode_params"):
            raise UserError(f"{source}: not a rave_ddsp export (no encode/decode methods)")
        if bool(getattr(module, "streaming", False)):
            raise UserError(f"{source}: a streaming export keeps state between calls; "
                            "export without --streaming for offline use")
        in_channels, _, latent_size, hop = module.encode_params.tolist()
        # an official RAVE export (accepted for comparisons) keeps its rate in ``sr``
        sample_rate = module.get_sample_rate() if hasattr(module, "get_sample_rate") else int(module.sr)
        return AutoEncoder(module, sample_rate, in_channels, hop, latent_size, None, source, device)
    from rave_ddsp.runtime.export import build, load_model  # imports lightning: only when a checkpoint needs it

    model = load_model(source, streaming=False)
    latent_size = model.hparams.latent_size
    module = build(model, latent_size, script=False)  # the export's code path (PCA latents, table noise)
    module.to(device)
    return AutoEncoder(module, model.hparams.sample_rate, model.hparams.channels, model.hop_length, latent_size,
                       model.latent_fidelity.clone(), source, device)


def has_noise_level(model) -> bool:
    """Whether ``model.module`` has the export's ``noise_level`` attribute (an official RAVE export has not)."""
    return hasattr(model.module, "set_noise_level")


@contextmanager
def noise_level(model, level: float) -> Iterator[None]:
    """Decode with the filtered-noise branch's gain at ``level`` (0: off, 1: as trained) inside the block.

    The previous gain is restored on leaving, also on an error. The noise table is
    deterministic and the PQMF synthesis linear, so ``decode(z)`` minus ``decode(z)`` at
    level 0 is the noise branch's part of the output (up to float rounding).
    """
    if not has_noise_level(model):
        raise UserError(f"{model.source}: this model has no noise_level (not a rave_ddsp export)")
    previous = float(model.module.get_noise_level()[0])
    if model.module.set_noise_level(level) != 0:
        raise UserError(f"noise level {level}: expected a finite value >= 0")
    try:
        yield
    finally:
        model.module.set_noise_level(previous)
