"""Pure, TorchScript-able DSP functions for the filtered-noise synthesizer.

The noise synthesizer turns one magnitude response per frame into filtered white noise:

1. ``magnitudes [..., L, K]`` (linear, K frequencies equally spaced from 0 to Nyquist)
   become zero-phase impulse responses with ``irfft`` (length ``N = 2 (K - 1)``);
2. each response is shifted to be causal (centred on sample ``N / 2``) and windowed with a
   Hann window, which is what keeps its spectrum smooth (:func:`impulse_response`);
3. white noise, pre-framed to ``[..., L, frame_size]``, is convolved frame by frame with
   that frame's response in the FFT domain. The FFT is long enough for the *linear*
   convolution (``frame_size + N - 1`` samples) and the frames are overlap-added, so the
   result is exactly a time-varying FIR filter applied to the noise
   (:func:`frame_convolve`).

Why not RAVE's (and ddsp_pytorch's) version: they take the ``irfft`` output as it comes
(the zero-phase response wrapped around the frame start), and keep only the first
``frame_size`` samples of each frame's convolution with no overlap-add. The wrapped
response smears energy into spectral valleys, and the truncation cuts each frame's
response tail, so the realised spectrum departs from the request by up to +15 dB in
valleys, with an energy ramp inside each frame. Here the realised power spectrum matches
the windowed response to within estimation noise, and the signal is stationary inside a
frame (``tests/dsp/test_filtered_noise.py`` measures both).

Delay: the causal, linear-phase response is centred on sample ``N / 2``, so a change of
magnitudes at frame ``l`` is heard centred ``N / 2`` samples after the frame start
(:func:`filter_delay`). Convolution tails past the end of a call are returned separately
by :func:`frame_convolve`, so a streaming caller can add them to the next call and get
exactly the one-call output.
"""
import functools
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

# Constants of the magnitude scaling, after DDSP's ``exp_sigmoid``.
SCALE_MAX = 2.0
"""Largest magnitude: the noise may be up to 6 dB louder than a unit-gain filter."""
SCALE_EXPONENT = 2.3
"""``ln(10) ~= 2.3``: for ``x << 0``, ``sigmoid(x) ** ln(10) ~= exp(x) ** ln(10) = 10 ** x``, so
the network's output acts as a log10 amplitude (one unit = 20 dB) below saturation."""
SCALE_FLOOR = 1e-7
"""Smallest magnitude (-140 dB): keeps magnitudes positive so logs and gradients stay finite."""
SCALE_OFFSET = 5.0
"""Input offset: a network output of 0 gives ``2 * sigmoid(-5) ** 2.3 ~= 2e-5`` (-94 dB), so
the noise branch starts nearly silent and the waveform branch learns first."""


def exp_sigmoid(
    x: Tensor,
    max_value: float = SCALE_MAX,
    exponent: float = SCALE_EXPONENT,
    floor: float = SCALE_FLOOR,
    offset: float = SCALE_OFFSET,
) -> Tensor:
    """Scale raw network outputs to noise magnitudes: ``2 * sigmoid(x - 5) ** 2.3 + 1e-7``.

    Any shape in, same shape out; values in ``(1e-7, 2 + 1e-7)`` with the defaults. See the
    ``SCALE_*`` constants for why each number is what it is.
    """
    return max_value * torch.sigmoid(x - offset) ** exponent + floor


def inverse_exp_sigmoid(
    magnitude: float,
    max_value: float = SCALE_MAX,
    exponent: float = SCALE_EXPONENT,
    floor: float = SCALE_FLOOR,
    offset: float = SCALE_OFFSET,
) -> float:
    """The network output ``x`` for which :func:`exp_sigmoid` gives ``magnitude`` (floor < magnitude < max)."""
    if not floor < magnitude < max_value + floor:
        raise ValueError(f"a noise magnitude must lie in ({floor:g}, {max_value + floor:g}), got {magnitude:g}")
    p = ((magnitude - floor) / max_value) ** (1.0 / exponent)
    return offset + math.log(p / (1.0 - p))


def ir_length(n_frequencies: int) -> int:
    """Length ``N = 2 (K - 1)`` of the impulse responses made from ``K`` magnitudes."""
    return 2 * (n_frequencies - 1)


def filter_delay(n_frequencies: int) -> int:
    """Group delay in samples of the causal linear-phase responses: ``N / 2``."""
    return n_frequencies - 1


def impulse_response(magnitudes: Tensor) -> Tensor:
    """Causal, windowed, linear-phase impulse responses from magnitude responses.

    Args:
        magnitudes: ``[..., K]`` linear, non-negative; K frequencies equally spaced from
            0 to Nyquist.

    Returns:
        ``[..., N]`` with ``N = 2 (K - 1)``: the zero-phase response (``irfft``), rotated
        so that its centre is sample ``N / 2``, times a periodic Hann window of length N
        (which is symmetric about ``N / 2``).
    """
    n_frequencies = magnitudes.shape[-1]
    if n_frequencies < 2:
        raise ValueError(f"need at least 2 magnitudes per frame (0 and Nyquist), got {n_frequencies}")
    n = ir_length(n_frequencies)
    zero_phase = torch.fft.irfft(magnitudes, n=n)  # [..., N], centred on 0
    causal = torch.roll(zero_phase, shifts=n // 2, dims=-1)  # [..., N], centred on N/2
    window = torch.hann_window(n, periodic=True, dtype=causal.dtype, device=causal.device)
    return causal * window


def next_power_of_two(n: int) -> int:
    """Smallest power of two ``>= n`` (FFT sizes)."""
    power = 1
    while power < n:
        power *= 2
    return power


def frame_convolve(frames: Tensor, impulse_responses: Tensor) -> Tuple[Tensor, Tensor]:
    """Convolve each frame with its own impulse response and overlap-add the results.

    Args:
        frames: ``[..., L, S]`` signal cut into L consecutive frames of S samples.
        impulse_responses: ``[..., L, N]`` one response per frame (same leading dims).

    Returns:
        ``(output [..., L * S], tail [..., N - 1])``: the first ``L * S`` samples of the
        overlap-added linear convolutions, and the ``N - 1`` samples that spill past the
        end. A streaming caller adds ``tail`` to the start of its next output.
    """
    n_frames, frame_size = frames.shape[-2], frames.shape[-1]
    n = impulse_responses.shape[-1]
    full = frame_size + n - 1  # length of one frame's linear convolution
    n_fft = next_power_of_two(full)
    spectrum = torch.fft.rfft(frames, n=n_fft) * torch.fft.rfft(impulse_responses, n=n_fft)
    convolved = torch.fft.irfft(spectrum, n=n_fft)[..., :full]  # [..., L, S + N - 1]

    # Overlap-add with hop S: cut each frame's result into P blocks of S samples; block p
    # of frame l lands on output block l + p.
    n_blocks = (full + frame_size - 1) // frame_size  # P
    convolved = torch.nn.functional.pad(convolved, [0, n_blocks * frame_size - full])
    blocks = convolved.reshape(list(convolved.shape[:-1]) + [n_blocks, frame_size])  # [..., L, P, S]
    out = blocks.new_zeros(list(blocks.shape[:-3]) + [n_frames + n_blocks - 1, frame_size])  # [..., L+P-1, S]
    for p in range(n_blocks):
        out[..., p:p + n_frames, :] += blocks[..., p, :]
    out = out.flatten(-2)  # [..., (L + P - 1) * S]
    split = n_frames * frame_size
    return out[..., :split], out[..., split:split + n - 1]


def carry_tail(output: Tensor, tail: Tensor, carried: Tensor) -> Tuple[Tensor, Tensor]:
    """Add the tail carried from the previous call and split off the new one (streaming).

    Args:
        output: ``[..., T]`` this call's output from :func:`frame_convolve`.
        tail: ``[..., N - 1]`` this call's spill-over.
        carried: ``[..., N - 1]`` the previous call's spill-over (zeros at the start).

    Returns:
        ``(output [..., T], tail [..., N - 1])`` to emit and to carry on. Works for any T,
        also when the spill-over is longer than a call.
    """
    length = output.shape[-1]
    full = torch.cat([output, tail], -1)  # [..., T + N - 1]
    full = full + torch.nn.functional.pad(carried, [0, length])
    return full[..., :length], full[..., length:]


def filtered_noise(magnitudes: Tensor, frame_size: int, noise: Optional[Tensor] = None) -> Tensor:
    """Filtered white noise with a time-varying magnitude response.

    Args:
        magnitudes: ``[..., L, K]`` linear, non-negative; K frequencies equally spaced from
            0 to Nyquist, one set per frame of ``frame_size`` samples.
        frame_size: samples per frame (the hop between frames).
        noise: optional ``[..., L * frame_size]`` input; default uniform white noise in
            ``[-1, 1)`` (variance 1/3).

    Returns:
        ``[..., L * frame_size]``: the noise filtered by each frame's windowed impulse
        response (:func:`impulse_response`), overlap-added; the tail past the last frame is
        dropped. Its power spectral density is ``|H(f)|^2 * var(noise)`` for constant
        magnitudes, ``H`` being the windowed response's transfer function.
    """
    n_frames = magnitudes.shape[-2]
    if noise is None:
        shape = list(magnitudes.shape[:-2]) + [n_frames * frame_size]
        noise = torch.rand(shape, dtype=magnitudes.dtype, device=magnitudes.device) * 2 - 1
    frames = noise.reshape(list(noise.shape[:-1]) + [n_frames, frame_size])  # [..., L, S]
    output, _ = frame_convolve(frames, impulse_response(magnitudes))
    return output


SHARE_FLOOR_DB = -200.0
"""Energy share reported for a part with no energy at all (or of a silent whole)."""


def share_db(part_energy: Tensor, whole_energy: Tensor) -> Tensor:
    """``10 log10(part / whole)`` of energies (any matching shapes), floored at :data:`SHARE_FLOOR_DB`:
    e.g. the noise branch's share of a model's output."""
    ratio = part_energy.double() / whole_energy.double()
    ratio = torch.where(whole_energy > 0, ratio, torch.zeros_like(ratio))
    return (10 * torch.log10(ratio)).clamp(min=SHARE_FLOOR_DB)


# ----------------------------------------------------------------- expected spectrum --
NOISE_VARIANCE = 1.0 / 3.0
"""Variance of the uniform white noise in ``[-1, 1)`` that the synthesizer filters."""


def response_autocorrelation(impulse_responses: Tensor) -> Tensor:
    """``r(t) = sum_n h[n] h[n + t]`` for lags ``t = 0 .. N-1`` of ``impulse_responses [..., N]``: ``[..., N]``.

    The power response is ``|H(w)|^2 = r(0) + 2 sum_{t>0} r(t) cos(w t)``.
    """
    n = impulse_responses.shape[-1]
    spectrum = torch.fft.rfft(impulse_responses, n=2 * n)
    return torch.fft.irfft(spectrum.real.pow(2) + spectrum.imag.pow(2), n=2 * n)[..., :n]


def window_correlation(n_fft: int, grid: int) -> Tensor:
    """``[grid]`` the periodic Hann window's circular autocorrelation on ``grid >= 2 n_fft`` lags,
    divided by its value at lag 0 (float64)."""
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    spectrum = torch.fft.rfft(window, n=grid)
    correlation = torch.fft.irfft(spectrum.real.pow(2) + spectrum.imag.pow(2), n=grid)
    return correlation / correlation[0]


@functools.lru_cache(maxsize=64)
def frame_window_weights(length: int, frame_size: int, n_frames: int, delay: int, n_fft: int, hop: int) -> Tensor:
    """How much of each noise frame each STFT frame sees: ``[T_stft, L]``, sums of ``window ** 2``.

    For a signal of ``length`` samples made of ``L`` frames of ``frame_size`` samples whose
    energy arrives ``delay`` samples late, analysed by a centred (reflect-padded) STFT with
    a periodic Hann window of ``n_fft`` samples and hop ``hop`` (torch.stft's
    ``center=True``): entry ``[t, l]`` is the sum of the squared window over the samples of
    STFT frame ``t`` that belong to noise frame ``l`` (none before ``delay``; the last frame's
    tail goes on to the end).
    """
    n_stft = length // hop + 1
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    start = torch.arange(n_stft)[:, None] * hop - n_fft // 2
    position = start + torch.arange(n_fft)[None, :]  # [T_stft, n_fft] sample index, before padding
    position = position.abs()  # reflection at the start ...
    position = torch.where(position >= length, 2 * (length - 1) - position, position)  # ... and at the end
    frame = torch.div(position - delay, frame_size, rounding_mode="floor")
    # before the first frame's energy arrives the signal is silent; after the last, its tail goes on
    weight = torch.where(frame < 0, 0.0, window.pow(2)[None, :])  # [T_stft, n_fft]
    weights = torch.zeros(n_stft, n_frames, dtype=torch.float64)
    weights.scatter_add_(1, frame.clamp(0, n_frames - 1), weight)
    return weights.float()  # cached: callers must not modify it in place


def noise_spectral_basis(n_fft: int, n_taps: int, band_gains: Optional[Tensor] = None) -> Tensor:
    """What each lag of a band's response autocorrelation adds to the expected STFT power.

    Args:
        n_fft: the analysis window (periodic Hann).
        n_taps: ``N``, the impulse responses' length (lags ``0 .. N-1``).
        band_gains: ``None`` when the STFT analyses each band signal itself; or ``[M, G // 2 +
            1]``, the power responses ``|G_m(w)|^2`` of the PQMF synthesis paths on a grid of
            ``G`` points (:func:`density_grid`), when it analyses the full-band sum
            ``sum_m g_m * up_M(n_m)``.

    Returns:
        ``[1, N, F]`` (bands) or ``[M, N, F]`` (full band), ``F = n_fft // 2 + 1``: basis
        ``B[m, t, k]`` such that the expected ``|STFT|^2`` per unit of squared window of
        noise of unit variance filtered by a response with autocorrelation ``r`` is
        ``sum_{m, t} r_m(t) B[m, t, k]`` (:func:`expected_stft_power`).

    The noise's power spectral density at the band rate is ``sum_t c_t r(t) cos(w t)``
    (``c_0 = 1``, else 2). Upsampling by ``M`` maps it to ``|H(M w)|^2 / M`` at the full rate
    and the synthesis path weighs it by ``|G_m(w)|^2``. The STFT's window smooths a density
    by its own power spectrum, i.e. multiplies its autocorrelation by the window's: exactly,
    for the bands (lag ``t`` times ``rho_w(t)``), and on the grid for the full band (its
    density's autocorrelation spans the synthesis filters).
    """
    lags = torch.arange(n_taps, dtype=torch.float64)
    weight = torch.where(lags == 0, 1.0, 2.0)  # [N]
    if band_gains is None:
        frequencies = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * (2 * torch.pi / n_fft)
        rho = window_correlation(n_fft, density_grid(n_fft, n_taps))[:n_taps]  # [N]
        basis = (weight * rho)[:, None] * torch.cos(lags[:, None] * frequencies[None, :])  # [N, F]
        return basis[None].float()
    n_bands, grid = band_gains.shape[0], 2 * (band_gains.shape[-1] - 1)
    if grid % n_fft or grid < 2 * n_fft:
        raise ValueError(f"a density grid of {grid} points does not fit n_fft {n_fft} (see density_grid)")
    frequencies = torch.arange(grid // 2 + 1, dtype=torch.float64) * (2 * torch.pi * n_bands / grid)
    cosines = weight[:, None] * torch.cos(lags[:, None] * frequencies[None, :])  # [N, G/2+1]
    density = band_gains.double().cpu()[:, None, :] * cosines[None] / n_bands  # [M, N, G/2+1]
    correlation = torch.fft.irfft(density, n=grid) * window_correlation(n_fft, grid)  # [M, N, G]
    return torch.fft.rfft(correlation, n=grid).real[..., :: grid // n_fft].float()  # [M, N, F]


def density_grid(n_fft: int, response_length: int) -> int:
    """Points ``G`` on the full circle at which :func:`noise_spectral_basis` samples a density whose
    autocorrelation spans ``response_length`` samples: enough for its window smoothing to be exact
    (``G >= n_fft + response_length``, and at least ``2 n_fft``), a power of two (a multiple of ``n_fft``)."""
    return next_power_of_two(max(2 * n_fft, n_fft + response_length))


def expected_stft_power(
    impulse_responses: Tensor,
    frame_size: int,
    n_fft: int,
    hop: int,
    basis: Tensor,
    variance: float = NOISE_VARIANCE,
) -> Tensor:
    """Expected ``|STFT|^2`` of filtered noise, known from the filters alone (no noise drawn).

    Args:
        impulse_responses: ``[..., M, L, N]`` per band ``M`` and frame ``L``
            (:func:`impulse_response` of the magnitudes).
        frame_size: band samples per frame.
        n_fft, hop: the analysis (periodic Hann window of ``n_fft``, centred frames).
        basis: :func:`noise_spectral_basis` for this ``n_fft``: ``[1, N, F]`` to analyse
            each band's signal (output ``[..., M, F, T]``), ``[M, N, F]`` to analyse the
            full-band sum of the bands after PQMF synthesis (output ``[..., F, T]``).
        variance: of the white noise.

    Returns:
        The expectation over noise draws of the STFT power, ``F = n_fft // 2 + 1`` bins.

    Model: within an STFT frame the noise is locally stationary, frame ``l`` having the
    (window-smoothed) density of :func:`noise_spectral_basis`; an STFT frame sees the frames
    under it, each weighted by the squared window (:func:`frame_window_weights`; the
    response's group delay :func:`filter_delay` is the frames' offset). Left out: the spill
    of each frame's response into the next (``N - 1`` of ``frame_size`` samples).
    ``tests/dsp/test_filtered_noise.py`` compares it with the average over noise draws.

    In float32 the sum of the frames' densities cancels to slightly negative values in bins far
    below the peak (seen: -1.6e-6 against a peak of 53, with magnitudes spanning 70 dB); a
    spectral distance then takes the square root of ``|W|^2 + E|N|^2 < 0`` where the waveform
    is silent (a NaN loss in training). The result is clamped to the smallest positive float.
    """
    n_bands, n_frames, n_taps = impulse_responses.shape[-3:]
    basis = basis.to(impulse_responses.device)
    correlation = response_autocorrelation(impulse_responses.float())  # [..., M, L, N]
    if basis.shape[0] == 1:  # each band analysed: [..., M, L, F]
        density, rate = torch.matmul(correlation, basis[0]), 1
    else:  # the bands summed after synthesis: [..., L, F]
        density, rate = torch.einsum("...mln,mnf->...lf", correlation, basis), n_bands
    length = n_frames * frame_size * rate
    delay = filter_delay(n_taps // 2 + 1) * rate
    weights = frame_window_weights(length, frame_size * rate, n_frames, delay, n_fft, hop).to(density.device)
    power = variance * torch.matmul(density.transpose(-1, -2), weights.T)  # [..., (M,) F, T]
    return power.clamp_min(torch.finfo(power.dtype).tiny)
