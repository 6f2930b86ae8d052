"""Variational encoder: PQMF bands -> latent posterior (mean, scale) per latent frame."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from rave_ddsp.nn.layers import ResidualStack, activation, conv1d, padding_is_causal

SCALE_FLOOR = 1e-4
"""Smallest posterior standard deviation: keeps ``log(scale)`` in the KL finite."""


class VariationalEncoder(nn.Module):
    """``bands [B, C*M, T] -> (mean [B, Z, L], scale [B, Z, L])`` with ``L = T / prod(ratios)``.

    The bands are first mu-law companded (``sign(x) log(1 + mu |x|) / log(1 + mu)``,
    ``input_mu``; 0 turns it off): quiet bands sit about 30 dB under the convolutions'
    initial biases, and without companding the encoder learned a constant latent (measured
    in ``docs/design-notes.md``, "A quiet start"). It is pointwise and invertible: nothing is
    lost and no streaming state is needed.

    A first convolution to ``channels[0]``, then per ratio ``r_i``: a residual stack at
    ``channels[i]`` and a strided convolution (kernel ``2 r_i``) down to ``channels[i+1]``;
    a last convolution gives ``2 Z`` channels: the mean and, through softplus, the scale.

    Args:
        in_channels: ``C * M`` band signals.
        latent_size: ``Z``.
        channels: hidden channels per resolution, ``len(ratios) + 1`` values.
        ratios: downsampling ratio of each stage.
        kernel_size, dilations: of the residual units.
        activation_name: see :func:`rave_ddsp.nn.layers.activation`.
        input_mu: mu of the input companding (0: none).
        variational: False for a deterministic encoder (the discrete bottleneck's): the head gives
            ``Z`` channels, the mean, and the scale returned is a constant 1 (unused).
        causal, streaming, cumulative_delay: see :mod:`rave_ddsp.nn.layers` (the delay the
            band signals already carry, e.g. the streaming PQMF's, in band samples).
        max_centred_period: see :func:`rave_ddsp.nn.layers.padding_is_causal`.
    """

    def __init__(
        self,
        in_channels: int,
        latent_size: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        ratios: Sequence[int] = (4, 4, 4, 2),
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 3, 9),
        activation_name: str = "leaky_relu",
        input_mu: float = 255.0,
        variational: bool = True,
        *,
        causal: bool = False,
        max_centred_period: Optional[int] = None,
        streaming: bool = False,
        cumulative_delay: int = 0,
    ):
        super().__init__()
        if input_mu < 0:
            raise ValueError(f"input_mu must be >= 0, got {input_mu}")
        self.input_mu = float(input_mu)
        if len(channels) != len(ratios) + 1:
            raise ValueError(f"need len(channels) == len(ratios) + 1, got {list(channels)} and {list(ratios)}")
        def kw(period: int) -> dict:  # a layer whose input frames span `period` band frames
            return dict(causal=padding_is_causal(period, causal, max_centred_period), streaming=streaming)

        layer = conv1d(in_channels, channels[0], 7, cumulative_delay=cumulative_delay, **kw(1))
        layers: List[nn.Module] = [layer]
        delay = layer.cumulative_delay
        for i, ratio in enumerate(ratios):
            period = math.prod(ratios[:i])
            stack = ResidualStack(channels[i], kernel_size, list(dilations), activation_name=activation_name,
                                  cumulative_delay=delay, **kw(period))
            down = conv1d(channels[i], channels[i + 1], 2 * ratio, stride=ratio, cumulative_delay=stack.cumulative_delay,
                          **kw(period))
            layers += [stack, activation(activation_name, channels[i]), down]
            delay = down.cumulative_delay
        self.variational = variational
        head = conv1d(channels[-1], (2 if variational else 1) * latent_size, 3, cumulative_delay=delay,
                      **kw(math.prod(ratios)))
        layers += [activation(activation_name, channels[-1]), head]
        self.net = nn.Sequential(*layers)
        self.latent_size = latent_size
        self.scale_floor = SCALE_FLOOR
        self.cumulative_delay = head.cumulative_delay
        """Streaming delay in latent frames."""

    def forward(self, bands: Tensor) -> Tuple[Tensor, Tensor]:
        if self.input_mu > 0:
            bands = torch.sign(bands) * torch.log1p(self.input_mu * bands.abs()) / math.log1p(self.input_mu)
        out = self.net(bands)
        if not self.variational:
            return out, torch.ones_like(out)
        mean, raw_scale = out.chunk(2, dim=1)  # [B, Z, L] each
        return mean, nn.functional.softplus(raw_scale) + self.scale_floor


def kl_divergence(mean: Tensor, scale: Tensor) -> Tensor:
    """Elementwise KL of N(mean, scale^2) to N(0, 1): ``1/2 (mean^2 + scale^2 - log scale^2 - 1)``.

    Same shape as the inputs (``[B, Z, L]``); the textbook 1/2 factor included.
    """
    variance = scale * scale
    return 0.5 * (mean * mean + variance - torch.log(variance) - 1)


def reparametrize(mean: Tensor, scale: Tensor) -> Tuple[Tensor, Tensor]:
    """Sample ``z = mean + scale * eps`` and its KL divergence to N(0, 1).

    ``mean, scale [B, Z, L] -> (z [B, Z, L], kl [])``: the KL summed over latent
    dimensions and averaged over batch and frames.
    """
    z = mean + scale * torch.randn_like(scale)
    return z, kl_divergence(mean, scale).sum(1).mean()
