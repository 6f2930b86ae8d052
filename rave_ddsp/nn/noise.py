"""The filtered-noise synthesizer: per-band noise shaped by magnitudes a conv stack predicts.

The DSP is in :mod:`rave_ddsp.dsp.filtered_noise`; this module adds the network that predicts the
magnitudes and the state that makes it stream.
"""
import math
from typing import List, Optional, Sequence

import cached_conv as cc
import torch
from torch import Tensor, nn

from rave_ddsp.dsp import filtered_noise as dsp
from rave_ddsp.nn.layers import activation, conv1d


NOISE_TABLE = 2 ** 16
"""Length of the deterministic noise table, in band samples."""
NOISE_SEED = 1234


def noise_table() -> Tensor:
    """``[NOISE_TABLE]`` uniform noise in ``[-1, 1)``, the same on every machine (seeded CPU generator)."""
    generator = torch.Generator().manual_seed(NOISE_SEED)
    return torch.rand(NOISE_TABLE, generator=generator) * 2 - 1


class FilteredNoise(nn.Module):
    """Predict per-band noise magnitudes from a hidden sequence and synthesise the noise.

    ``hidden [B, H, T] -> noise [B, M, T]`` where T is the band-signal length (a multiple
    of ``frame_size = prod(ratios)``) and M the number of (PQMF) bands. A conv stack
    downsamples the hidden sequence by ``prod(ratios)`` to ``M * K`` raw values per
    frame; :func:`rave_ddsp.dsp.filtered_noise.exp_sigmoid` scales them to magnitudes; each band's white
    noise is filtered frame by frame (:func:`rave_ddsp.dsp.filtered_noise.frame_convolve`).

    ``initial_gain_db``: the magnitudes an untrained branch starts at (the output layer's
    bias); None keeps the layer's random initial bias, centred on 0: about ``exp_sigmoid(0)`` (-94 dB).

    Streaming: the convolutions are cached and the filter tails that spill past the end
    of a call are added to the start of the next, so chunked output equals one-call
    output for the same noise. ``cumulative_delay`` (band samples) is the delay of the
    streaming magnitudes relative to the non-streaming ones.

    Noise source: fresh uniform noise (``torch.rand``) in training; with
    ``deterministic = True`` (set by the export) a fixed table of uniform noise read at
    the running sample position, so that a streamed model and its one-call (or
    non-streaming) twin draw the same noise at the same time and can be compared exactly.
    Each band reads the table at its own offset; the table repeats every ``NOISE_TABLE``
    band samples (24 s at 44.1 kHz with 16 bands).
    """

    def __init__(
        self,
        in_channels: int,
        n_bands: int,
        n_frequencies: int = 5,
        ratios: Sequence[int] = (4, 4, 4),
        hidden_channels: Optional[int] = None,
        activation_name: str = "leaky_relu",
        initial_gain_db: Optional[float] = None,
        *,
        causal: bool = False,
        streaming: bool = False,
        cumulative_delay: int = 0,
        max_batch_size: int = cc.MAX_BATCH_SIZE,
    ):
        super().__init__()
        hidden_channels = hidden_channels or in_channels
        layers: List[nn.Module] = []
        channels = in_channels
        for ratio in ratios:
            conv = conv1d(channels, hidden_channels, 2 * ratio + 1, stride=ratio, causal=causal,
                          streaming=streaming, cumulative_delay=cumulative_delay)
            cumulative_delay = conv.cumulative_delay
            layers += [conv, activation(activation_name, hidden_channels)]
            channels = hidden_channels
        out = conv1d(channels, n_bands * n_frequencies, 3, causal=causal, streaming=streaming,
                     cumulative_delay=cumulative_delay)
        if initial_gain_db is not None:
            with torch.no_grad():
                out.bias.fill_(dsp.inverse_exp_sigmoid(10 ** (initial_gain_db / 20)))
        layers.append(out)
        self.net = nn.Sequential(*layers)
        self.n_bands = n_bands
        self.n_frequencies = n_frequencies
        self.frame_size = math.prod(ratios)
        self.streaming = streaming
        self.cumulative_delay = out.cumulative_delay * self.frame_size
        tail = dsp.ir_length(n_frequencies) - 1
        self.register_buffer("tail", torch.zeros(max_batch_size if streaming else 0, n_bands, tail),
                             persistent=False)
        self.deterministic = False
        self.register_buffer("table", noise_table(), persistent=False)
        # Table position of the next band sample. A streaming model starts behind its
        # non-streaming twin by its delay, so that both use the same noise at the same output time.
        self.register_buffer("position", torch.tensor(-self.cumulative_delay if streaming else 0), persistent=False)
        self.register_buffer("band_offsets", torch.arange(n_bands) * (NOISE_TABLE // n_bands), persistent=False)

    def magnitudes(self, hidden: Tensor) -> Tensor:
        """``hidden [B, H, T] -> [B, M, L, K]`` linear magnitudes, ``L = T / frame_size``."""
        raw = self.net(hidden).float()  # [B, M * K, L]; float32 for the FFTs under autocast
        batch, frames = raw.shape[0], raw.shape[-1]
        raw = raw.reshape(batch, self.n_bands, self.n_frequencies, frames)  # [B, M, K, L]
        return dsp.exp_sigmoid(raw).transpose(2, 3)  # [B, M, L, K]

    def synthesize(self, magnitudes: Tensor, noise: Tensor) -> Tensor:
        """Filter ``noise [B, M, L * frame_size]`` by ``magnitudes [B, M, L, K]``."""
        batch, bands, frames = magnitudes.shape[0], magnitudes.shape[1], magnitudes.shape[2]
        noise_frames = noise.reshape(batch, bands, frames, self.frame_size)  # [B, M, L, S]
        out, tail = dsp.frame_convolve(noise_frames, dsp.impulse_response(magnitudes))
        if not self.streaming:
            return out
        out, tail = dsp.carry_tail(out, tail, self.tail[:batch])
        self.tail[:batch].copy_(tail)
        return out

    def table_noise(self, batch: int, length: int) -> Tensor:
        """``[B, M, length]`` noise from the table at the current position (then advanced if streaming)."""
        time = self.position + torch.arange(length, device=self.table.device)  # [length]
        period = self.table.shape[0]
        index = torch.remainder(time[None, :] + self.band_offsets[:, None], period)  # [M, length]
        if self.streaming:
            self.position.add_(length).remainder_(period)
        return self.table[index].expand(batch, -1, -1)  # [B, M, length]

    def forward(self, hidden: Tensor) -> Tensor:
        return self.render(self.magnitudes(hidden))

    def render(self, magnitudes: Tensor) -> Tensor:
        """Noise shaped by ``magnitudes [B, M, L, K]``: ``[B, M, L * frame_size]``."""
        batch, frames = magnitudes.shape[0], magnitudes.shape[2]
        length = frames * self.frame_size
        if self.deterministic:
            noise = self.table_noise(batch, length)
        else:
            noise = torch.rand(batch, self.n_bands, length, dtype=magnitudes.dtype, device=magnitudes.device) * 2 - 1
        return self.synthesize(magnitudes, noise)
