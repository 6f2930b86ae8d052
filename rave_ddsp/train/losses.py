"""Spectral distances, adversarial losses and feature matching.

Spectral distance (per scale, averaged over scales)::

    d(x, y) = linear_weight * ||S_y - S_x||_F / sqrt(||S_x||_F^2 + ||S_floor||_F^2)   (spectral convergence)
            + log_weight    * mean |log(S_y + e) - log(S_x + e)|                      (log magnitude L1)
            + level_weight  * mean max(0, log(E_y + E_e) - log(E_x + E_e)) / 2          (excess frame level)

with ``S`` the STFT magnitude (or a mel spectrogram when ``n_mels`` is set for that
scale). The linear term is relative, so it weighs loud and quiet examples alike; the
log term matches the spectral envelope in decibels, valleys included. ``S_floor`` is the
expected spectrum of white noise at ``silence_db`` (-60 dB RMS): without it, a silent
target would make the relative term explode (any output is infinitely far from silence).
Likewise ``e`` is the RMS spectrum of white noise at ``log_floor_db`` (-100 dB): below it,
differences are inaudible, and a fixed tiny epsilon would let digital silence in the
target dominate the log term.

The log term averages over bins, so it weighs an error by its bandwidth: a steady 2.8 kHz tone at
-64 dB RMS over a silent target costs it 0.13, as much as a 1.2 dB error in every bin, and the
relative term, normalised over the whole batch, hardly sees it beside louder examples. The
excess-level term judges each frame's energy ``E = sum_f S^2`` (of the linear spectrum) where it
is above the target's, in the log term's units (``/ 2``: log amplitude), with ``E_e`` the energy
of the log term's floor noise in a frame: it keeps a model from humming in silence. It is one-sided
on purpose: a two-sided level term rewards any energy in the right amount, and a filtered-noise
branch buys it more cheaply than a waveform (``docs/design-notes.md``, "Silence").
"""
import math
from typing import Callable, List, Optional, Sequence

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
        level_weight: weight of the excess frame-level term (0: off).
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
        level_weight: float = 0.0,
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
        self.scales = [(n_fft, max(1, n_fft // hop_divisor)) for n_fft in n_ffts]
        # mean squared magnitude per spectrogram element of white noise at 0 dB, per scale
        generator = torch.Generator().manual_seed(0)
        unit = [float(transform(torch.randn(8, 16 * n_fft, generator=generator)).pow(2).mean())
                for transform, n_fft in zip(transforms, n_ffts)]
        self.floor_energy = [energy * 10 ** (silence_db / 10) for energy in unit]
        self.log_floors = [(energy * 10 ** (log_floor_db / 10)) ** 0.5 for energy in unit]
        self.linear_weight = linear_weight
        self.log_weight = log_weight
        self.level_weight = level_weight

    def forward(self, x: Tensor, y: Tensor, noise_power: Optional[Callable[[int, int], Tensor]] = None) -> Tensor:
        """Distance of ``y`` (estimate) from ``x`` (target), both ``[B, C, T]``: a scalar.

        ``noise_power``: when the estimate is ``y`` plus independent noise that is judged by its
        expected spectrum rather than one draw of it, ``noise_power(n_fft, hop)`` returns that
        noise's expected STFT power ``[B * C, F, frames]`` at a scale; the estimate's magnitude
        is then ``sqrt(|Y|^2 + E|N|^2)`` (the cross term's expectation is zero).
        """
        x = x.float().reshape(-1, x.shape[-1])  # [B * C, T]
        y = y.float().reshape(-1, y.shape[-1])  # [B * C, T]
        total = x.new_zeros(())
        for transform, (n_fft, hop), floor, log_floor in zip(self.transforms, self.scales, self.floor_energy,
                                                            self.log_floors):
            spec_x, spec_y = self.spectrum(transform, x), self.spectrum(transform, y)  # [B * C, F, frames]
            if noise_power is not None:
                spec_y = torch.sqrt(spec_y.pow(2) + noise_power(n_fft, hop))
            if self.level_weight:
                level_floor = spec_x.shape[-2] * log_floor ** 2
                level_x, level_y = (spec.pow(2).sum(dim=-2) + level_floor for spec in (spec_x, spec_y))
                excess = torch.relu(torch.log(level_y) - torch.log(level_x))
                total = total + self.level_weight * 0.5 * excess.mean()
            if isinstance(transform, torchaudio.transforms.MelSpectrogram):
                spec_x, spec_y = transform.mel_scale(spec_x), transform.mel_scale(spec_y)
            if self.linear_weight:
                reference = torch.sqrt(spec_x.pow(2).sum() + floor * spec_x.numel())
                convergence = (spec_y - spec_x).norm() / reference
                total = total + self.linear_weight * convergence
            if self.log_weight:
                log_l1 = (torch.log(spec_y + log_floor) - torch.log(spec_x + log_floor)).abs().mean()
                total = total + self.log_weight * log_l1
        return total / len(self.transforms)

    @staticmethod
    def spectrum(transform: nn.Module, signal: Tensor) -> Tensor:
        """The linear-frequency STFT magnitude of ``signal`` (a mel transform's first stage)."""
        if isinstance(transform, torchaudio.transforms.MelSpectrogram):
            return transform.spectrogram(signal)
        return transform(signal)


class NoiseFloorDistance(nn.Module):
    """How far a noise model's expected spectrum is from the target's spectral floor, cell by cell.

    The floor of the target's STFT power in a cell of ``cell_bins`` adjacent bins (one frame)
    is estimated from a low quantile of the bins (pooled with the neighbouring frames'): between the partials of a harmonic sound the
    quantile falls in the valleys, in noise (breath, bow, attacks) it measures the noise, whose
    power per bin is exponentially distributed, so the ``q``-quantile is rescaled by
    ``1 / -ln(1 - q)`` to that distribution's mean. The distance is the mean
    ``|ln(N + e) - ln(floor + e)|`` with ``N`` the noise's expected power averaged over the cell
    and ``e`` the power of white noise at ``log_floor_db`` in a bin. It judges the noise branch on
    its own (its gradient does not shrink with its share of the output), so the branch owns
    the stochastic floor and the waveform branch the partials above it.

    Args:
        n_fft: the analysis (periodic Hann window, hop ``n_fft // 4``, centred frames).
        cell_bins: bins per cell (the noise filters' frequency resolution).
        quantile: ``q``.
        log_floor_db: see above.
    """

    def __init__(self, n_fft: int, cell_bins: int, quantile: float = 0.25, log_floor_db: float = -100.0):
        super().__init__()
        if not 0 < quantile < 1:
            raise ValueError(f"the noise floor quantile must lie in (0, 1), got {quantile}")
        self.n_fft, self.hop, self.cell_bins, self.quantile = n_fft, n_fft // 4, max(1, cell_bins), quantile
        # not saved in checkpoints: models from before this distance existed keep loading
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.correction = -1.0 / math.log(1.0 - quantile)
        generator = torch.Generator().manual_seed(0)
        unit = float(self.power(torch.randn(8, 16 * n_fft, generator=generator)).mean())
        self.log_floor = unit * 10 ** (log_floor_db / 10)

    def power(self, signal: Tensor) -> Tensor:
        """``[N, T] -> [N, F, frames]`` STFT power (torchaudio's Spectrogram framing)."""
        spectrum = torch.stft(signal, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                              return_complex=True)
        return spectrum.real.pow(2) + spectrum.imag.pow(2)

    def cells(self, power: Tensor) -> Tensor:
        """``[B, F, frames] -> [B, F // cell_bins, cell_bins, frames]`` (bins past the last whole cell dropped)."""
        usable = power.shape[1] // self.cell_bins * self.cell_bins
        return power[:, :usable].unflatten(1, (-1, self.cell_bins))

    def floor(self, x: Tensor) -> Tensor:
        """The target's floor estimate ``[B * C, cells, frames]`` of ``x [B, C, T]``: the quantile of
        the cell's bins in the frame and its two neighbours (3 ``cell_bins`` samples; edges repeated)."""
        power = self.cells(self.power(x.float().reshape(-1, x.shape[-1])))  # [B * C, cells, bins, frames]
        padded = torch.cat([power[..., :1], power, power[..., -1:]], dim=-1)
        pooled = padded.unfold(-1, 3, 1)  # [B * C, cells, bins, frames, 3]
        pooled = pooled.transpose(2, 3).flatten(-2)  # [B * C, cells, frames, 3 * bins]
        return torch.quantile(pooled, self.quantile, dim=-1) * self.correction

    def forward(self, x: Tensor, noise_power: Callable[[int, int], Tensor]) -> Tensor:
        """Distance of the noise with expected power ``noise_power(n_fft, hop) [B * C, F, frames]`` from ``x``'s floor."""
        with torch.no_grad():
            floor = self.floor(x)
        noise = self.cells(noise_power(self.n_fft, self.hop)).mean(2)  # [B * C, cells, frames]
        return (torch.log(noise + self.log_floor) - torch.log(floor + self.log_floor)).abs().mean()


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss for the discriminator: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``."""
    return hinge_real_loss(real) + hinge_fake_loss(fake)


def hinge_real_loss(real: Tensor) -> Tensor:
    """The real-audio term of :func:`hinge_discriminator_loss`: ``mean(relu(1 - D(x)))``."""
    return torch.relu(1 - real).mean()


def hinge_fake_loss(fake: Tensor) -> Tensor:
    """The generated-audio term of :func:`hinge_discriminator_loss`: ``mean(relu(1 + D(G(z))))``."""
    return torch.relu(1 + fake).mean()


def hinge_generator_loss(fake: Tensor) -> Tensor:
    """Hinge loss for the generator: ``-mean(D(G(z)))``."""
    return -fake.mean()


def least_squares_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """LSGAN loss for the discriminator: ``mean((1 - D(x))^2) + mean(D(G(z))^2)``."""
    return least_squares_real_loss(real) + least_squares_fake_loss(fake)


def least_squares_real_loss(real: Tensor) -> Tensor:
    """The real-audio term of :func:`least_squares_discriminator_loss`: ``mean((1 - D(x))^2)``."""
    return (1 - real).pow(2).mean()


def least_squares_fake_loss(fake: Tensor) -> Tensor:
    """The generated-audio term of :func:`least_squares_discriminator_loss`: ``mean(D(G(z))^2)``."""
    return fake.pow(2).mean()


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
