"""Spectral distances, adversarial losses and feature matching.

Spectral distance (per scale, averaged over scales)::

    d(x, y) = linear_weight * ||S_y - S_x||_F / sqrt(||S_x||_F^2 + ||S_floor||_F^2)   (spectral convergence)
            + log_weight    * mean |log(S_y + e) - log(S_x + e)|                      (log magnitude L1)

with ``S`` the STFT magnitude (or a mel spectrogram when ``n_mels`` is set for that
scale). The linear term is relative, so it weighs loud and quiet examples alike; the
log term matches the spectral envelope in decibels, valleys included. ``S_floor`` is the
expected spectrum of white noise at ``silence_db`` (-60 dB RMS): without it, a silent
target would make the relative term explode (any output is infinitely far from silence).
Likewise ``e`` is the RMS spectrum of white noise at ``log_floor_db`` (-100 dB): below it,
differences are inaudible, and a fixed tiny epsilon would let digital silence in the
target dominate the log term.
"""
from typing import List, Optional, Sequence

import torch
import torchaudio
from torch import Tensor, nn


class MultiScaleSTFT(nn.Module):
    """Multi-scale spectral distance between ``[B, C, T]`` signals (audio or PQMF bands).

    Args:
        n_ffts: FFT sizes, one per scale (Hann window of the same length).
        hop_divisor: hop = n_fft // hop_divisor (4: 75 % overlap).
        linear_weight: weight of the spectral-convergence term.
        log_weight: weight of the log-magnitude L1 term.
        log_floor_db: level (dB RMS) of the white noise whose spectrum floors the log term.
        n_mels: optional, one per scale: mel bands (0 for a linear-frequency scale).
        sample_rate: needed only with ``n_mels``.
        silence_db: level (dB RMS) of the white noise whose spectrum floors the
            spectral-convergence denominator.
    """

    def __init__(
        self,
        n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        hop_divisor: int = 4,
        linear_weight: float = 1.0,
        log_weight: float = 1.0,
        log_floor_db: float = -100.0,
        n_mels: Optional[Sequence[int]] = None,
        sample_rate: int = 44100,
        silence_db: float = -60.0,
    ):
        super().__init__()
        if n_mels is not None and len(n_mels) != len(n_ffts):
            raise ValueError(f"n_mels has {len(n_mels)} entries but n_ffts has {len(n_ffts)}; give one per scale")
        mels = list(n_mels) if n_mels is not None else [0] * len(n_ffts)
        transforms: List[nn.Module] = []
        for n_fft, n_mel in zip(n_ffts, mels):
            hop = max(1, n_fft // hop_divisor)
            if n_mel:
                transforms.append(torchaudio.transforms.MelSpectrogram(
                    sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mel, power=1.0, center=True,
                    norm="slaney", mel_scale="slaney"))
            else:
                transforms.append(torchaudio.transforms.Spectrogram(n_fft, hop_length=hop, power=1.0, center=True))
        self.transforms = nn.ModuleList(transforms)
        # mean squared magnitude per spectrogram element of white noise at 0 dB, per scale
        generator = torch.Generator().manual_seed(0)
        unit = [float(transform(torch.randn(8, 16 * n_fft, generator=generator)).pow(2).mean())
                for transform, n_fft in zip(transforms, n_ffts)]
        self.floor_energy = [energy * 10 ** (silence_db / 10) for energy in unit]
        self.log_floors = [(energy * 10 ** (log_floor_db / 10)) ** 0.5 for energy in unit]
        self.linear_weight = linear_weight
        self.log_weight = log_weight

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance of ``y`` (estimate) from ``x`` (target), both ``[B, C, T]``: a scalar."""
        x = x.float().reshape(-1, x.shape[-1])  # [B * C, T]
        y = y.float().reshape(-1, y.shape[-1])  # [B * C, T]
        total = x.new_zeros(())
        for transform, floor, log_floor in zip(self.transforms, self.floor_energy, self.log_floors):
            spec_x, spec_y = transform(x), transform(y)  # [B * C, F, frames]
            if self.linear_weight:
                reference = torch.sqrt(spec_x.pow(2).sum() + floor * spec_x.numel())
                convergence = (spec_y - spec_x).norm() / reference
                total = total + self.linear_weight * convergence
            if self.log_weight:
                log_l1 = (torch.log(spec_y + log_floor) - torch.log(spec_x + log_floor)).abs().mean()
                total = total + self.log_weight * log_l1
        return total / len(self.transforms)


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss for the discriminator: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``."""
    return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """Hinge loss for the generator: ``-mean(D(G(z)))``."""
    return -fake.mean()


def least_squares_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """LSGAN loss for the discriminator: ``mean((1 - D(x))^2) + mean(D(G(z))^2)``."""
    return (1 - real).pow(2).mean() + fake.pow(2).mean()


def least_squares_generator_loss(fake: Tensor) -> Tensor:
    """LSGAN loss for the generator: ``mean((1 - D(G(z)))^2)``."""
    return (1 - fake).pow(2).mean()


def feature_matching_loss(real_features: List[Tensor], fake_features: List[Tensor]) -> Tensor:
    """Mean over layers of the relative L1 distance between discriminator features.

    ``mean |f_real - f_fake| / mean |f_real|`` per layer (real features detached), so that
    every layer counts alike whatever its scale. Lists of ``[B, ...]`` tensors.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(f"got {len(real_features)} real and {len(fake_features)} fake feature maps")
    total = real_features[0].new_zeros(())
    for real, fake in zip(real_features, fake_features):
        real = real.detach()
        total = total + (real - fake).abs().mean() / (real.abs().mean() + 1e-7)
    return total / len(real_features)
