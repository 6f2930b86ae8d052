"""Decoder: latent sequence -> per-band waveform (with amplitude modulation) and per-band noise."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from rave_ddsp.nn.layers import DelayLine, ResidualStack, Upsample, activation, conv1d, padding_is_causal
from rave_ddsp.nn.noise import FilteredNoise


class Decoder(nn.Module):
    """``z [B, Z, L] -> (waveform [B, C*M, T], noise [B, C*M, T])``, ``T = L * prod(ratios)``.

    The mirror of :class:`rave_ddsp.nn.encoder.VariationalEncoder`: a first convolution to
    ``channels[-1]``, then per ratio (last first) a sub-pixel upsampling to
    ``channels[i]`` and a residual stack. From the last hidden sequence ``h [B, H, T]``:

    * waveform head: ``2 C M`` channels split into a waveform ``w`` and an amplitude ``a``;
      the band signals are ``w * sigmoid(a)`` (the amplitude carries the loudness envelope,
      so the waveform part can stay near unit scale). ``a`` starts at the logit of
      ``initial_gain_db``: an untrained ``w`` is 30-40 dB louder than recordings, and a
      decoder that starts that loud settles on one average sound that ignores the latent
      (measured in ``docs/design-notes.md``, "A quiet start");
    * noise branch: :class:`rave_ddsp.nn.noise.FilteredNoise` on ``h``, one noise signal per band
      (always causal).

    The caller adds the two (the split lets an exported model scale the noise).
    ``cumulative_delay`` is the streaming delay in band samples; the two branches are
    delayed to match.

    Args:
        out_channels: ``C * M`` band signals.
        latent_size: ``Z``.
        channels, ratios, kernel_size, dilations, activation_name: as for the encoder
            (``channels[0]`` is the band-rate width).
        initial_gain_db: the waveform head's initial gain (see above).
        noise_bands: ``K`` magnitudes per noise frame; ``noise_ratios``: the noise
            branch's downsampling (its frame size is their product);
            ``noise_initial_gain_db``: its starting magnitudes (None: -94 dB).
        causal, streaming: see :mod:`rave_ddsp.nn.layers`; max_centred_period: see
            :func:`rave_ddsp.nn.layers.padding_is_causal`.
    """

    def __init__(
        self,
        out_channels: int,
        latent_size: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        ratios: Sequence[int] = (4, 4, 4, 2),
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 3, 9),
        activation_name: str = "leaky_relu",
        noise_bands: int = 5,
        noise_ratios: Sequence[int] = (4, 4, 4),
        initial_gain_db: float = -40.0,
        noise_initial_gain_db: Optional[float] = None,
        *,
        causal: bool = False,
        max_centred_period: Optional[int] = None,
        streaming: bool = False,
    ):
        super().__init__()
        if len(channels) != len(ratios) + 1:
            raise ValueError(f"need len(channels) == len(ratios) + 1, got {list(channels)} and {list(ratios)}")
        noise_frame, latent_frame = math.prod(noise_ratios), math.prod(ratios)
        if latent_frame % noise_frame:
            raise ValueError(f"the noise frame (prod(noise_ratios) = {noise_frame}) must divide the latent frame "
                             f"(prod(ratios) = {latent_frame}) so that each latent frame holds whole noise frames")
        def kw(period: int) -> dict:  # a layer whose input frames span `period` band frames
            return dict(causal=padding_is_causal(period, causal, max_centred_period), streaming=streaming)

        layer = conv1d(latent_size, channels[-1], 3, **kw(latent_frame))
        layers: List[nn.Module] = [layer]
        delay = layer.cumulative_delay
        for i in reversed(range(len(ratios))):
            up = Upsample(channels[i + 1], channels[i], ratios[i], cumulative_delay=delay,
                          **kw(math.prod(ratios[: i + 1])))
            stack = ResidualStack(channels[i], kernel_size, list(dilations), activation_name=activation_name,
                                  cumulative_delay=up.cumulative_delay, **kw(math.prod(ratios[:i])))
            layers += [activation(activation_name, channels[i + 1]), up, stack]
            delay = stack.cumulative_delay
        self.net = nn.Sequential(*layers)
        self.head = nn.Sequential(
            activation(activation_name, channels[0]),
            conv1d(channels[0], 2 * out_channels, 7, cumulative_delay=delay, **kw(1)),
        )
        gain = 10 ** (initial_gain_db / 20)
        if not 0 < gain < 1:
            raise ValueError(f"initial_gain_db must be below 0 dB, got {initial_gain_db}")
        with torch.no_grad():
            self.head[1].bias[out_channels:] = math.log(gain / (1 - gain))  # sigmoid(a) = gain
        # The noise branch never looks ahead: coarse noise magnitudes gain little from future
        # context, and its look-ahead (at the noise frame rate) would delay the whole decoder.
        self.noise = FilteredNoise(channels[0], out_channels, noise_bands, noise_ratios,
                                   activation_name=activation_name, initial_gain_db=noise_initial_gain_db,
                                   causal=True, streaming=streaming,
                                   cumulative_delay=delay)
        head_delay, noise_delay = self.head[1].cumulative_delay, self.noise.cumulative_delay
        self.cumulative_delay = max(head_delay, noise_delay)
        self.align_waveform = DelayLine(self.cumulative_delay - head_delay, streaming)
        self.align_noise = DelayLine(self.cumulative_delay - noise_delay, streaming)

    def forward(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        waveform, noise, _ = self.branches(z)
        return waveform, noise

    def branches(self, z: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(waveform, noise, noise magnitudes [B, C*M, L, K])``; the magnitudes are not delayed
        for streaming (training, which judges the noise by its expected spectrum, needs them)."""
        hidden = self.net(z)  # [B, H, T]
        waveform, amplitude = self.head(hidden).chunk(2, dim=1)  # [B, C*M, T] each
        waveform = self.align_waveform(waveform * torch.sigmoid(amplitude))
        magnitudes = self.noise.magnitudes(hidden)  # [B, C*M, L, K]
        return waveform, self.align_noise(self.noise.render(magnitudes)), magnitudes
