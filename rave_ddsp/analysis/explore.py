"""Latent-space exploration with a trained model: the library behind ``scripts/explore.py``.

Every experiment takes an :class:`~rave_ddsp.runtime.inference.AutoEncoder` (latents in the model's
PCA coordinates) and returns tensors; it writes nothing. The figures are in
:mod:`rave_ddsp.analysis.figures`. Trajectories are ``[Z, L]``, audio ``[C, T]``.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

from rave_ddsp.data.audio import find_audio_files, load_audio
from rave_ddsp.errors import UnusableFile, UserError
from rave_ddsp.runtime.inference import AutoEncoder, has_noise_level, noise_level
from rave_ddsp.train.latent import (LatentStatistics, interpolate, latent_size_for_fidelity, ornstein_uhlenbeck,
                              prior_mean, sample_prior)

FIDELITY_TARGETS = (0.9, 0.95, 0.99)
CHUNK_SECONDS = 60.0
"""Long files are encoded in pieces of about this length (bounds memory; PCA only)."""


def check_dims(model: AutoEncoder, dims: Optional[int]) -> int:
    """``dims`` checked against the model's latent size (``None``: all of them)."""
    if dims is None:
        return model.latent_size
    if not 1 <= dims <= model.latent_size:
        raise UserError(f"--dims {dims} is outside 1..{model.latent_size} (the latent size of {model.source})")
    return dims


def encode_file(model: AutoEncoder, path: Path) -> Tuple[Tensor, Tensor]:
    """One file at the model's rate and channels: ``(audio [C, T], latent [Z, L])``."""
    audio = torch.from_numpy(load_audio(path, model.sample_rate, model.channels))  # [C, T]
    return audio, model.encode(audio[None])[0]


def render(model: AutoEncoder, latent: Tensor, samples: int) -> Tensor:
    """``latent [Z, L] -> audio [C, samples]`` (decoded, cropped to ``samples``)."""
    return model.decode(latent[None])[0, :, :samples]


def split_noise(model: AutoEncoder, latent: Tensor, samples: int) -> Tuple[Tensor, Optional[Tensor]]:
    """``(render(model, latent, samples), its filtered-noise part)``, ``[C, samples]`` each.

    The noise part is the render minus the render with ``noise_level`` 0
    (:func:`rave_ddsp.runtime.inference.noise_level`); None for a model without noise_level.
    """
    audio = render(model, latent, samples)
    if not has_noise_level(model):
        return audio, None
    with noise_level(model, 0.0):
        return audio, audio - render(model, latent, samples)


# ------------------------------------------------------------------------- pca --
@dataclass
class PCAReport:
    """The PCA of one data set's latents, in the model's PCA coordinates (all ``[Z]``)."""

    files: int
    frames: int
    variance: Tensor
    """Data PCA: variance along each principal direction of this data, largest first."""
    fidelity: Tensor
    """Data PCA: fraction of the total variance in the first k directions."""
    axis_variance: Tensor
    """Variance of each model coordinate on this data, in the model's order."""
    axis_fidelity: Tensor
    """Fraction of this data's variance in the first k model coordinates (what an export keeping k retains)."""
    model_fidelity: Optional[Tensor]
    """The curve stored by training (None for a .ts)."""

    @staticmethod
    def from_statistics(statistics: LatentStatistics, files: int, model_fidelity: Optional[Tensor]) -> "PCAReport":
        """The report of the frames gathered in ``statistics`` (raises :class:`UserError` if they do not vary)."""
        if float(statistics.count) < 2:
            raise UserError(f"only {int(statistics.count)} latent frame: a PCA needs at least 2 (give longer audio)")
        covariance = statistics.covariance()  # [Z, Z]
        variance = torch.linalg.eigvalsh(covariance).flip(0).clamp_min(0)  # [Z], descending
        total = float(variance.sum())
        if total <= 0:
            raise UserError("the latents of this audio do not vary at all (silence?): there is no PCA to compute")
        axis_variance = covariance.diagonal().clamp_min(0)  # [Z]
        return PCAReport(files=files, frames=int(statistics.count), variance=variance.float(),
                         fidelity=(variance.cumsum(0) / total).float(), axis_variance=axis_variance.float(),
                         axis_fidelity=(axis_variance.cumsum(0) / float(axis_variance.sum())).float(),
                         model_fidelity=None if model_fidelity is None else model_fidelity.float())

    def sizes(self, curve: Optional[Tensor]) -> Optional[Dict[str, int]]:
        """``{"0.9": k, ...}``: the fewest dimensions reaching each of :data:`FIDELITY_TARGETS`."""
        if curve is None:
            return None
        return {str(t): latent_size_for_fidelity(curve, t) for t in FIDELITY_TARGETS}

    def to_dict(self) -> dict:
        def floats(x: Optional[Tensor]) -> Optional[List[float]]:
            return None if x is None else [round(float(v), 6) for v in x]

        total = float(self.variance.sum())
        return {
            "files": self.files, "frames": self.frames, "latent_size": int(self.variance.numel()),
            "data_pca": {"variance": floats(self.variance), "explained_variance": floats(self.variance / total),
                         "fidelity": floats(self.fidelity), "latent_size_for_fidelity": self.sizes(self.fidelity)},
            "model_axes": {"variance": floats(self.axis_variance),
                           "explained_variance": floats(self.axis_variance / total),
                           "fidelity": floats(self.axis_fidelity),
                           "latent_size_for_fidelity": self.sizes(self.axis_fidelity)},
            "model_stored": {"fidelity": floats(self.model_fidelity),
                             "latent_size_for_fidelity": self.sizes(self.model_fidelity)},
        }

    def describe(self) -> str:
        total = float(self.variance.sum())
        lines = [f"{self.files} file(s), {self.frames} latent frames, latent size {self.variance.numel()}",
                 "  dim   data PCA: explained  cumulative   model axis: explained  cumulative"]
        for k in range(self.variance.numel()):
            data, axis = 100 * float(self.variance[k]) / total, 100 * float(self.axis_variance[k]) / total
            lines.append(f"  {k:3d}   {data:17.2f} %  {float(self.fidelity[k]):10.4f}"
                         f"   {axis:20.2f} %  {float(self.axis_fidelity[k]):10.4f}")
        lines.append("latent size needed for fidelity " + " / ".join(str(t) for t in FIDELITY_TARGETS) + ":")
        for name, curve in (("data PCA (best linear, this data)", self.fidelity),
                            ("model axes (first k of the export, this data)", self.axis_fidelity),
                            ("model's stored curve (training data)", self.model_fidelity)):
            sizes = self.sizes(curve)
            found = " / ".join(str(v) for v in sizes.values()) if sizes else "not stored in a .ts"
            lines.append(f"  {name}: {found}")
        return "\n".join(lines)


def latent_pca(model: AutoEncoder, inputs: Sequence[Path], progress: bool = True) -> Tuple[PCAReport, List[str]]:
    """Encode the audio files in ``inputs`` (files or folders) and compute their latents' PCA.

    Returns the report and one ``"name: reason"`` line per file skipped (unsupported or unreadable).
    """
    files, skipped = find_audio_files(inputs)
    problems = [f"{name}: {reason}" for name, reason in skipped]
    statistics = LatentStatistics(model.latent_size)
    used = 0
    chunk = max(1, round(CHUNK_SECONDS * model.frame_rate)) * model.hop_length
    for path, name in tqdm(files, desc="encode", unit="file", disable=not progress):
        try:
            audio = torch.from_numpy(load_audio(path, model.sample_rate, model.channels))  # [C, T]
        except UnusableFile as error:
            problems.append(f"{name}: {error.reason}")
            continue
        for piece in audio.split(chunk, dim=-1):
            statistics.update(model.encode(piece[None]))  # [1, Z, L]
        used += 1
    if not used:
        raise UserError(f"no readable audio in {', '.join(map(str, inputs))}" +
                        (f" ({'; '.join(problems)})" if problems else ""))
    return PCAReport.from_statistics(statistics, used, model.fidelity), problems


# ------------------------------------------------------------- trajectories --
def sweep(model: AutoEncoder, latent: Tensor, dims: int, offsets: Tensor, samples: int,
          progress: bool = True) -> Tensor:
    """Add each of ``offsets [N]`` to each of the first ``dims`` coordinates of ``latent [Z, L]`` in turn.

    Returns the decoded audio ``[dims, N, C, samples]``.
    """
    out = torch.empty(dims, offsets.numel(), model.channels, samples)
    with tqdm(total=dims * offsets.numel(), desc="sweep", unit="step", disable=not progress) as bar:
        for d in range(dims):
            for i, offset in enumerate(offsets.tolist()):
                swept = latent.clone()
                swept[d] += offset
                out[d, i] = render(model, swept, samples)
                bar.update()
    return out


def interpolation(model: AutoEncoder, start: Tensor, end: Tensor, steps: int, spherical: bool,
                  samples: int, progress: bool = True) -> Tuple[Tensor, Tensor]:
    """``steps`` points from ``start`` to ``end`` (``[Z, L]`` each, same length), endpoints included.

    Returns the weights ``[steps]`` and the decoded audio ``[steps, C, samples]``.
    """
    weights = torch.linspace(0, 1, steps)
    latents = interpolate(start, end, weights, spherical)  # [steps, Z, L]
    audio = torch.stack([render(model, z, samples)
                         for z in tqdm(latents, desc="interpolate", unit="step", disable=not progress)])
    return weights, audio


def model_prior_mean(model: AutoEncoder) -> Tensor:
    """``[Z]`` mean of the prior N(0, I) in this model's PCA coordinates (:func:`rave_ddsp.train.latent.prior_mean`).

    Read from the exported module's buffers (``latent_mean [Z_full]``, ``latent_pca
    [Z_full, Z_full]``), so it works for checkpoints and ``.ts`` files alike; a mono model
    exported with several channels repeats it per channel.
    """
    module = model.module
    kept, fold = int(module.latent_size), int(module.fold)
    mean = prior_mean(module.latent_mean.cpu(), module.latent_pca.cpu()[:kept])  # [Z']
    return mean.repeat(fold)  # [fold * Z']


def frames_for(model: AutoEncoder, seconds: float) -> Tuple[int, int]:
    """``(latent frames, samples)`` for ``seconds`` of audio."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise UserError(f"--seconds {seconds}: expected a positive duration")
    samples = max(1, round(seconds * model.sample_rate))
    return math.ceil(samples / model.hop_length), samples


def walk_decay(tau: float, frame_rate: float) -> float:
    """Per-frame pull of a walk with time constant ``tau`` seconds: ``exp(-1 / (tau * frame rate))`` (inf: 1)."""
    if not tau > 0:
        raise UserError(f"--tau {tau}: expected a positive time constant in seconds (inf for a free walk)")
    return math.exp(-1.0 / (tau * frame_rate))


def random_walk(model: AutoEncoder, frames: int, step: float, tau: float, dims: int,
                start: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """``[Z, frames]`` Ornstein-Uhlenbeck walk of the first ``dims`` coordinates around ``start`` (default: 0).

    0 is the training data's latent mean; the other coordinates stay at ``start``.
    """
    if not step >= 0:
        raise UserError(f"--step {step}: expected >= 0")
    start = torch.zeros(model.latent_size) if start is None else start
    steps = torch.zeros(model.latent_size)
    steps[:dims] = step
    return ornstein_uhlenbeck(start, frames, steps, walk_decay(tau, model.frame_rate), generator=generator)


def prior_samples(model: AutoEncoder, count: int, frames: int, smoothing: float, temperature: float, dims: int,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``[count, Z, frames]`` draws from the prior, smoothed over ``smoothing`` seconds (Gaussian std)."""
    if not smoothing >= 0 or not temperature >= 0:
        raise UserError(f"--smooth {smoothing} and --temperature {temperature}: expected >= 0")
    mean = model_prior_mean(model)
    return torch.stack([sample_prior(mean, frames, smoothing * model.frame_rate, temperature, dims, generator)
                        for _ in range(count)])
