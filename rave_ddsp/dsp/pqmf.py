"""Pseudo-QMF (PQMF) filter bank: near-perfect-reconstruction split of audio into M bands.

Theory (Nguyen 1994; Vaidyanathan, *Multirate Systems and Filter Banks*, ch. 8): a linear
phase lowpass prototype ``h`` (``N`` taps, cutoff ``pi/(2M)``) is cosine-modulated into M
analysis filters ``h_m[n] = 2 h[n] cos((2m+1) pi/(2M) (n - (N-1)/2) + (-1)^m pi/4)`` and M
synthesis filters (same with ``- (-1)^m pi/4``). The phases cancel the aliasing between
adjacent bands; aliasing between the others is bounded by the prototype's stopband
(``[pi/M, pi]``); the round trip is a pure delay when ``g = h * h`` is a Nyquist(2M) filter
(``g[2Mk] = 0`` for ``k != 0``, i.e. ``|H(w)|^2 + |H(pi/M - w)|^2 = 1``).

Design (``design_prototype``): ``h`` is a combination of the ``r`` most concentrated even
Slepian (DPSS) sequences of length ``N`` and half-bandwidth ``pi/M``, so its stopband is
small by construction. Their weights are fitted by Levenberg-Marquardt to the Nyquist(2M)
residuals (plus each sequence's stopband energy, and unit DC gain), starting from a
Kaiser-windowed sinc. ``r`` is the largest (at most ``K - 2`` for ``N = 2KM - 1``) whose fit
keeps the peak stopband gain at or below ``-attenuation`` dB. With ``n_taps=0`` the bank
takes the shortest ``N = 2KM - 1`` whose design also predicts a reconstruction SNR of at
least ``attenuation`` dB (``reconstruction_snr``): for 100 dB, ``K = 10`` for every M
tried (2-32), i.e. 319 taps for 16 bands.

The Slepian design reaches about 117 dB in float32 at 319 taps, where a Kaiser-windowed
sinc (as in RAVE) stays near 60 dB at any length; the designs tried and their measurements
are in ``docs/design-notes.md``.

Alignment. Non-streaming (training): zero padding, band frame ``n`` is centred on sample
``n*M`` and ``inverse(forward(x)) ~ x`` with no shift (edges deviate within ~N samples).
Streaming: causal, the left context is cached (``cc.CachedPadding1d``, batch up to 64,
``C*M`` channels, created on the first call: run ``forward`` and ``inverse`` once with the
real channel count before ``torch.jit.script``). Streaming output equals the non-streaming
output delayed by ``analysis_delay`` / ``synthesis_delay`` samples (multiples of M)::

    analysis, frame n:  needs x up to sample (n+1)M-1   = offline frame n - analysis_delay/M
    synthesis, block n: needs frames up to n            = offline samples - synthesis_delay

T must be a multiple of M (``ValueError`` otherwise): pad or crop the signal first.
"""
import math
from functools import lru_cache
from typing import Final, Tuple

import cached_conv as cc
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.signal import kaiser_beta
from scipy.signal.windows import dpss

MAX_TAPS_PER_BAND_PAIR = 32  # auto design search bound: N = 2KM - 1 with K <= this
MAX_ATTENUATION_DB = 150.0  # float64 design limit (140 dB needs K = 14)
SPARE_SLEPIANS = 2  # use at most K - SPARE_SLEPIANS sequences (more only slow the fit)
DC_WEIGHT = 1e3  # weight of the "DC gain = 1" residual in the fit
LM_MAX_ITERATIONS = 200
LM_RELATIVE_TOLERANCE = 1e-10  # stop when the cost decreases by less than this fraction
STOPBAND_GRID = 1 << 16  # FFT size for measuring the peak stopband gain


def cosine_modulate(prototype: np.ndarray, n_bands: int) -> Tuple[np.ndarray, np.ndarray]:
    """Analysis and synthesis filters ``[M, N]`` from the prototype ``[N]``."""
    n = np.arange(len(prototype)) - (len(prototype) - 1) / 2
    band = np.arange(n_bands)[:, None]
    phase = (-1.0) ** band * np.pi / 4
    angle = (2 * band + 1) * np.pi / (2 * n_bands) * n
    return 2 * prototype * np.cos(angle + phase), 2 * prototype * np.cos(angle - phase)


def nyquist_residuals(prototype: np.ndarray, n_bands: int) -> np.ndarray:
    """``2M g[2Mk]`` for ``k >= 1`` where ``g = h * h``: zero for a perfect prototype."""
    lags = range(2 * n_bands, len(prototype), 2 * n_bands)
    return np.array([2 * n_bands * prototype[:-lag] @ prototype[lag:] for lag in lags])


def peak_stopband_db(prototype: np.ndarray, n_bands: int) -> float:
    """Largest gain of the prototype on ``[pi/M, pi]`` relative to its DC gain, in dB."""
    response = np.abs(np.fft.rfft(prototype, STOPBAND_GRID))
    frequency = np.linspace(0, np.pi, len(response))
    return float(20 * np.log10(response[frequency >= np.pi / n_bands].max() / response[0]))


def reconstruction_snr(prototype: np.ndarray, n_bands: int) -> float:
    """Exact round-trip SNR (dB) for white noise, from the blocked transfer matrices.

    Blocking the signal into M-sample vectors makes the bank LTI: analysis ``A[j] [M, M]``,
    synthesis ``S[j] [M, M]``, round trip ``S * A`` (matrix convolution), which must equal
    a delay of ``N - 1`` samples; the squared error per sample is the noise power.
    """
    analysis, synthesis = cosine_modulate(prototype, n_bands)
    n_taps, m = len(prototype), n_bands
    n_blocks = -(-(n_taps + m - 1) // m)
    blocked_a = np.zeros((n_blocks, m, m))  # [J, band, phase]
    blocked_s = np.zeros((n_blocks, m, m))  # [J, phase, band]
    for j in range(n_blocks):
        for phase in range(m):
            if 0 <= j * m - phase < n_taps:
                blocked_a[j, :, phase] = analysis[:, j * m - phase]
            if j * m + phase < n_taps:
                blocked_s[j, phase, :] = m * synthesis[:, j * m + phase]
    total = np.zeros((2 * n_blocks - 1, m, m))  # [2J - 1, phase out, phase in]
    for i in range(n_blocks):
        for j in range(n_blocks):
            total[i + j] += blocked_s[i] @ blocked_a[j]
    block, shift = divmod(n_taps - 1, m)
    for phase in range(m):
        if phase >= shift:
            total[block, phase, phase - shift] -= 1
        else:
            total[block + 1, phase, phase - shift + m] -= 1
    return float(-10 * np.log10(np.sum(total**2) / m))


def _fit_slepian(n_bands: int, n_taps: int, n_slepians: int, attenuation: float) -> np.ndarray:
    """Levenberg-Marquardt fit of the prototype ``[N]`` in the span of ``r`` even Slepians."""
    tapers, ratios = dpss(n_taps, n_taps / (2 * n_bands), 2 * n_slepians, return_ratios=True)
    basis = tapers[::2].T  # [N, r], the even (symmetric) sequences
    stop_energy = np.clip(1 - ratios[::2], 0, None)  # [r], fraction outside |w| < pi/M
    dc = basis.sum(0)  # [r]
    n = np.arange(n_taps) - (n_taps - 1) / 2
    start = np.sinc(n / (2 * n_bands)) / (2 * n_bands) * np.kaiser(n_taps, kaiser_beta(attenuation))
    weights = np.linalg.lstsq(basis, start, rcond=None)[0]
    lags = np.arange(2 * n_bands, n_taps, 2 * n_bands)
    pad = n_taps - 1

    def residuals(w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        h = basis @ w
        padded = np.pad(h, (pad, pad))
        shifted = [padded[pad + lag:pad + lag + n_taps] + padded[pad - lag:pad - lag + n_taps] for lag in lags]
        jacobian = 2 * n_bands * np.array(shifted).reshape(len(lags), n_taps) @ basis  # [lags, r]
        return nyquist_residuals(h, n_bands), jacobian

    def cost(w: np.ndarray, nyquist: np.ndarray) -> float:
        return nyquist @ nyquist + np.sum(stop_energy * w**2) + (DC_WEIGHT * (dc @ w - 1)) ** 2

    nyquist, jacobian = residuals(weights)
    current, damping = cost(weights, nyquist), 1e-3
    for _ in range(LM_MAX_ITERATIONS):
        normal = jacobian.T @ jacobian + np.diag(stop_energy) + DC_WEIGHT**2 * np.outer(dc, dc)
        gradient = jacobian.T @ nyquist + stop_energy * weights + DC_WEIGHT**2 * dc * (dc @ weights - 1)
        while damping < 1e12:
            trial = weights - np.linalg.solve(normal + damping * np.diag(np.diag(normal)), gradient)
            trial_nyquist, trial_jacobian = residuals(trial)
            trial_cost = cost(trial, trial_nyquist)
            if trial_cost < current:
                break
            damping *= 4
        else:
            break
        improvement = (current - trial_cost) / current
        weights, nyquist, jacobian, current = trial, trial_nyquist, trial_jacobian, trial_cost
        damping = max(damping / 4, 1e-15)
        if improvement < LM_RELATIVE_TOLERANCE:
            break
    prototype = basis @ weights
    return prototype / prototype.sum()


def _design_for_taps(n_bands: int, attenuation: float, n_taps: int) -> np.ndarray:
    """The best fitted prototype ``[N]`` meeting the attenuation, or an empty array."""
    most = max(1, (n_taps + 1) // (2 * n_bands) - SPARE_SLEPIANS)
    for n_slepians in range(most, 0, -1):
        prototype = _fit_slepian(n_bands, n_taps, n_slepians, attenuation)
        if peak_stopband_db(prototype, n_bands) <= -attenuation:
            return prototype
    return np.zeros(0)


def _best_for_taps(n_bands: int, attenuation: float, n_taps: int) -> np.ndarray:
    """Of the fits with 1 to ``K - 1`` Slepians (``N = 2KM - 1``) whose stopband meets the
    attenuation, the one with the highest reconstruction SNR ``[N]``; or an empty array.

    For a given length this spends every sequence the stopband allows on reconstruction (for 16
    bands and 159 taps at 65 dB: 4 sequences, 66.6 dB SNR, where the automatic search's rule
    would keep 3 and reach 62 dB only at a 60 dB stopband)."""
    best, best_snr = np.zeros(0), -np.inf
    for n_slepians in range(1, max(2, (n_taps + 1) // (2 * n_bands))):
        prototype = _fit_slepian(n_bands, n_taps, n_slepians, attenuation)
        if peak_stopband_db(prototype, n_bands) <= -attenuation:
            snr = reconstruction_snr(prototype, n_bands)
            if snr > best_snr:
                best, best_snr = prototype, snr
    return best


@lru_cache(maxsize=None)
def _design_cached(n_bands: int, attenuation: float, n_taps: int) -> np.ndarray:
    if n_taps:
        prototype = _best_for_taps(n_bands, attenuation, n_taps)
        if len(prototype) == 0:
            raise ValueError(
                f"PQMF: no {n_taps}-tap prototype for {n_bands} bands reaches attenuation="
                f"{attenuation} dB; use more taps or n_taps=0 (automatic)")
        return prototype
    for pairs in range(max(2, math.floor(attenuation / 12)), MAX_TAPS_PER_BAND_PAIR + 1):
        prototype = _design_for_taps(n_bands, attenuation, 2 * pairs * n_bands - 1)
        if len(prototype) and reconstruction_snr(prototype, n_bands) >= attenuation:
            return prototype
    raise ValueError(f"PQMF: no prototype for {n_bands} bands reaches attenuation={attenuation} dB")


def design_prototype(n_bands: int, attenuation: float = 100.0, n_taps: int = 0) -> np.ndarray:
    """Near-perfect-reconstruction prototype ``[N]`` (float64, symmetric, DC gain 1).

    ``n_taps=0`` picks the shortest ``N = 2KM - 1`` reaching ``attenuation`` dB both as
    peak stopband rejection and as predicted reconstruction SNR. A given ``n_taps`` (a shorter
    bank: less delay) gets the design with the highest reconstruction SNR whose stopband meets
    ``attenuation``. Cached per arguments.
    """
    if n_bands < 2:
        raise ValueError(f"PQMF: design_prototype needs n_bands >= 2, got {n_bands}")
    if not 0 < attenuation <= MAX_ATTENUATION_DB:
        raise ValueError(f"PQMF: attenuation={attenuation} dB, expected a number in (0, {MAX_ATTENUATION_DB}]")
    if n_taps and (n_taps % 2 == 0 or n_taps <= 2 * n_bands):
        raise ValueError(f"PQMF: n_taps={n_taps} must be odd and above 2*n_bands={2 * n_bands} (or 0: automatic)")
    return _design_cached(n_bands, float(attenuation), n_taps).copy()


def polyphase_kernels(prototype: np.ndarray, n_bands: int) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Polyphase conv kernels and the streaming delays (in frames) for an odd-length prototype.

    Returns the analysis kernel ``[M bands, M phases, Ja]``, the synthesis kernel
    ``[M phases, M bands, Js]``, ``analysis_frames`` and ``synthesis_frames``. With the
    signal blocked as ``x_p[r, q] = x[qM + r]`` and the last ``J - 1`` frames as left
    context, the convolutions compute (``c = (N - 1) / 2``, ``e`` aligns ``c`` to blocks)::

        bands[m, q]        = sum_n h_m[n] x[(q + 1)M - 1 - e - n]   (frame q - analysis_frames offline)
        y[qM + r]          = M sum_{m, p} bands[m, p] f_m[c - D + (q - p)M + r],  D = synthesis_frames*M
    """
    m, n_taps = n_bands, len(prototype)
    analysis, synthesis = cosine_modulate(prototype, n_bands)
    centre = (n_taps - 1) // 2
    analysis_frames = (centre + m) // m - 1
    lead = (analysis_frames + 1) * m - 1 - centre  # e: zero taps on the recent side
    synthesis_frames = -(-centre // m)
    analysis_length = -(-(n_taps + lead) // m)
    synthesis_length = -(-(n_taps - centre + synthesis_frames * m) // m)
    analysis_kernel = np.zeros((m, m, analysis_length))
    synthesis_kernel = np.zeros((m, m, synthesis_length))
    for j in range(analysis_length):
        for phase in range(m):
            tap = (analysis_length - j) * m - 1 - lead - phase
            if 0 <= tap < n_taps:
                analysis_kernel[:, phase, j] = analysis[:, tap]
    for j in range(synthesis_length):
        for phase in range(m):
            tap = centre - synthesis_frames * m + (synthesis_length - 1 - j) * m + phase
            if 0 <= tap < n_taps:
                synthesis_kernel[phase, :, j] = m * synthesis[:, tap]
    return analysis_kernel, synthesis_kernel, analysis_frames, synthesis_frames


class PQMF(nn.Module):
    """Split ``[B, C, T]`` audio into ``[B, C*M, T/M]`` bands (channel-major) and back.

    Args:
        n_bands: M; 1 is the identity (no filtering, no delay).
        attenuation: peak stopband rejection of the prototype in dB; with ``n_taps=0`` also
            the minimum predicted reconstruction SNR (see the module docstring).
        streaming: causal with cached left context (nn~), else zero-delay (training).
        n_taps: prototype length (odd, > 2M); 0 picks the shortest that meets ``attenuation``.

    Attributes:
        n_taps: the prototype length N (1 for one band).
        analysis_delay, synthesis_delay, delay: in samples, multiples of M, describing the
            streaming bank in both modes; ``delay`` is their sum (the streaming round trip).
    """

    n_bands: Final[int]
    n_taps: Final[int]
    analysis_delay: Final[int]
    synthesis_delay: Final[int]
    delay: Final[int]
    streaming: Final[bool]

    def __init__(self, n_bands: int = 16, attenuation: float = 100.0, streaming: bool = False, n_taps: int = 0):
        super().__init__()
        if n_bands < 1:
            raise ValueError(f"PQMF: n_bands={n_bands}, expected a positive integer")
        if n_bands == 1:
            analysis_kernel = synthesis_kernel = np.ones((1, 1, 1))
            analysis_frames = synthesis_frames = 0
            self.n_taps = 1
        else:
            prototype = design_prototype(n_bands, attenuation, n_taps)
            analysis_kernel, synthesis_kernel, analysis_frames, synthesis_frames = polyphase_kernels(prototype, n_bands)
            self.n_taps = len(prototype)
        self.n_bands = n_bands
        self.streaming = streaming
        self.analysis_delay = analysis_frames * n_bands
        self.synthesis_delay = synthesis_frames * n_bands
        self.delay = self.analysis_delay + self.synthesis_delay
        self.register_buffer("analysis_kernel", torch.tensor(analysis_kernel, dtype=torch.float32))
        self.register_buffer("synthesis_kernel", torch.tensor(synthesis_kernel, dtype=torch.float32))
        analysis_context = analysis_kernel.shape[-1] - 1
        synthesis_context = synthesis_kernel.shape[-1] - 1
        if streaming:
            self.analysis_pad = cc.CachedPadding1d(analysis_context)
            self.synthesis_pad = cc.CachedPadding1d(synthesis_context)
        else:
            self.analysis_pad = nn.ConstantPad1d((analysis_context - analysis_frames, analysis_frames), 0.0)
            self.synthesis_pad = nn.ConstantPad1d((synthesis_context - synthesis_frames, synthesis_frames), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Analysis: ``x [B, C, T]`` -> bands ``[B, C*M, T/M]`` (band m of channel c at c*M + m)."""
        batch, channels, samples = x.shape
        m = self.n_bands
        if samples % m != 0:
            raise ValueError(
                "PQMF: T={} samples is not a multiple of n_bands M={}; pad or crop the signal".format(samples, m))
        frames = samples // m
        blocks = x.reshape(batch, channels, frames, m)  # [B, C, T/M, M]
        phases = blocks.transpose(2, 3).reshape(batch, channels * m, frames)  # [B, C*M, T/M]
        phases = self.analysis_pad(phases)  # [B, C*M, T/M + Ja - 1]
        phases = phases.reshape(batch * channels, m, phases.shape[-1])  # [B*C, M, T/M + Ja - 1]
        bands = F.conv1d(phases, self.analysis_kernel)  # [B*C, M, T/M]
        return bands.reshape(batch, channels * m, frames)  # [B, C*M, T/M]

    @torch.jit.ignore
    def synthesis_power_responses(self, n_fft: int) -> torch.Tensor:
        """``[M, n_fft // 2 + 1]``: ``|G_m(w_k)|^2`` of each band's synthesis path (upsampling by M,
        then filter) at the bins of an ``n_fft``-point DFT, measured by synthesising a unit
        impulse in each band (so the bank's own scaling is included)."""
        m = self.n_bands
        frames = (self.synthesis_kernel.shape[-1] + 1) * 2
        impulses = torch.zeros(m, m, frames, device=self.synthesis_kernel.device)
        impulses[torch.arange(m), torch.arange(m), frames // 2] = 1.0
        with torch.no_grad():
            responses = self.inverse(impulses)[:, 0]  # [M, T]: band m's response in batch item m
        padded = -(-responses.shape[-1] // n_fft) * n_fft  # a multiple of n_fft: every k-th bin is a bin of n_fft
        spectrum = torch.fft.rfft(responses.double(), n=padded)[:, :: padded // n_fft]
        return spectrum.abs().pow(2).float()  # [M, F]

    @torch.jit.export
    def inverse(self, bands: torch.Tensor) -> torch.Tensor:
        """Synthesis: bands ``[B, C*M, T/M]`` -> ``[B, C, T]``."""
        batch, channels_bands, frames = bands.shape
        m = self.n_bands
        if channels_bands % m != 0:
            raise ValueError(
                "PQMF: bands have {} channels, expected a multiple of n_bands M={}".format(channels_bands, m))
        channels = channels_bands // m
        bands = self.synthesis_pad(bands)  # [B, C*M, T/M + Js - 1]
        bands = bands.reshape(batch * channels, m, bands.shape[-1])  # [B*C, M, T/M + Js - 1]
        phases = F.conv1d(bands, self.synthesis_kernel)  # [B*C, M, T/M]
        blocks = phases.reshape(batch, channels, m, frames).transpose(2, 3)  # [B, C, T/M, M]
        return blocks.reshape(batch, channels, frames * m)  # [B, C, T]
