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
