"""Training-only discriminators for the adversarial phase (phase 2).

Three families, written from their papers, each mapping audio ``[B, C, T]`` (the C
channels are the first layer's input channels) to one entry per sub-discriminator::

    [(logits, features), ...]   logits: the final score map; features: the activations
                                after every hidden layer, for feature matching

* :class:`MultiPeriodDiscriminator` (HiFi-GAN, Kong et al. 2020): for each period ``p``
  the signal is folded to ``[B, C, T / p, p]`` so that samples ``p`` apart share a
  column, then 2-d convolutions ``(5, 1)`` stride ``(3, 1)`` run down the columns.
* :class:`MultiScaleDiscriminator` (MelGAN, Kumar et al. 2019): the same 1-d grouped
  strided stack on the signal average-pooled 0, 1, 2... times.
* :class:`MultiResolutionSTFTDiscriminator` (EnCodec, Défossez et al. 2022; UnivNet):
  2-d convolutions over the complex STFT (real and imaginary parts as channels) at
  several FFT sizes, dilated in time and strided in frequency. The STFT is computed in
  float32 even under bf16 autocast.

:class:`CombinedDiscriminator` concatenates the families named in a config. Parameters
with ``channels=1`` and default widths (1024-wide families, as in the papers, and the
combined default, capped at 512)::

    MultiPeriodDiscriminator()          41.1 M   (max_channels=512: 14.9 M)
    MultiScaleDiscriminator()           16.9 M   (max_channels=512:  4.6 M)
    MultiResolutionSTFTDiscriminator()   0.3 M
    CombinedDiscriminator()             19.5 M   (RAVE v2's discriminator: 27.1 M)

Convolutions carry weight normalisation (a parametrization); the discriminators never
ship, so it is never removed.
"""
from math import gcd
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

DiscriminatorOutput = List[Tuple[Tensor, List[Tensor]]]

# Multi-period (HiFi-GAN): widths capacity * 4^i (capped) over 4 strided layers, then
# one unstrided layer at the last width and a 1-channel output layer.
PERIOD_CAPACITY = 32
PERIOD_KERNEL = 5            # taps down a column of the folded [T / p, p] view
PERIOD_STRIDE = 3
PERIOD_GROWTH = 4
PERIOD_STRIDED_LAYERS = 4
PERIOD_SLOPE = 0.1           # LeakyReLU negative slope in HiFi-GAN

# Multi-scale (MelGAN): a wide input layer, 4 grouped strided layers, a dense layer.
SCALE_CAPACITY = 16
SCALE_INPUT_KERNEL = 15
SCALE_KERNEL = 41
SCALE_STRIDE = 4
SCALE_GROWTH = 4
SCALE_STRIDED_LAYERS = 4
SCALE_GROUP_WIDTH = 4        # input channels per group of the grouped layers
SCALE_DENSE_KERNEL = 5
SCALE_POOL_KERNEL = 4        # average pooling between scales, stride 2
SCALE_POOL_STRIDE = 2
SCALE_SLOPE = 0.2

# Multi-resolution STFT (EnCodec): constant width, kernels (time frames, frequency bins).
STFT_CAPACITY = 32
STFT_HOP_DIVISOR = 4         # hop = n_fft // 4
STFT_KERNEL = (3, 9)
STFT_DILATIONS = (1, 2, 4)   # in time, one strided layer each
STFT_FREQ_STRIDE = 2
STFT_HEAD_KERNEL = (3, 3)
STFT_SLOPE = 0.2

OUTPUT_KERNEL = 3            # taps of every family's 1-channel output layer

KINDS = ("multi_period", "multi_scale", "multi_resolution_stft")


def fold_period(x: Tensor, period: int) -> Tensor:
    """Fold ``[B, C, T]`` into ``[B, C, ceil(T / p), p]``: sample ``t`` lands in row
    ``t // p``, column ``t % p``, so a column holds samples ``p`` apart.

    T is first extended on the right by reflection to a multiple of ``p`` (needs T >= p).
    """
    batch, channels, length = x.shape
    if length < period:
        raise ValueError(f"fold_period: signal of {length} samples is shorter than period {period}")
    pad = (-length) % period
    if pad:
        x = F.pad(x, (0, pad), mode="reflect")  # [B, C, T + pad]
    return x.reshape(batch, channels, -1, period)  # [B, C, (T + pad) / p, p]


def _widths(capacity: int, growth: int, n_layers: int, max_channels: int) -> List[int]:
    """``min(capacity * growth^i, max_channels)`` for i in 0..n_layers-1."""
    return [min(capacity * growth ** i, max_channels) for i in range(n_layers)]


def _run(layers: nn.ModuleList, output: nn.Module, h: Tensor, slope: float) -> Tuple[Tensor, List[Tensor]]:
    """Hidden layers with LeakyReLU, each activation kept, then the output layer."""
    features: List[Tensor] = []
    for layer in layers:
        h = F.leaky_relu(layer(h), slope)
        features.append(h)
    return output(h), features


class PeriodDiscriminator(nn.Module):
    """One period of the MPD: ``[B, C, T] -> ([B, 1, T', p], features [B, H, T'', p])``."""

    def __init__(self, channels: int = 1, period: int = 2, capacity: int = PERIOD_CAPACITY,
                 max_channels: int = 1024):
        super().__init__()
        self.period = period
        widths = [channels] + _widths(capacity, PERIOD_GROWTH, PERIOD_STRIDED_LAYERS, max_channels)
        pad = (PERIOD_KERNEL // 2, 0)
        layers = [
            weight_norm(nn.Conv2d(c_in, c_out, (PERIOD_KERNEL, 1), (PERIOD_STRIDE, 1), pad))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        ]
        layers.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (PERIOD_KERNEL, 1), 1, pad)))
        self.layers = nn.ModuleList(layers)
        self.output = weight_norm(nn.Conv2d(widths[-1], 1, (OUTPUT_KERNEL, 1), 1, (OUTPUT_KERNEL // 2, 0)))

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``x``: ``[B, C, T]``, T >= period.

        A ``(k, 1)`` kernel never mixes columns, so the columns run as batch items of 1-d
        convolutions over ``[B * p, C, T / p]``: the same weights and sums as the 2-d
        convolutions on the ``[B, C, T / p, p]`` view, whose width of p oneDNN handles badly
        (backward 1.35x slower at p = 2 in float32, 2x in bfloat16; Intel Xeon, 1 thread).
        Logits and features come back as ``[B, H, T', p]`` views.
        """
        folded = fold_period(x, self.period)  # [B, C, R, p]
        batch, channels, rows, period = folded.shape
        h = folded.permute(0, 3, 1, 2).reshape(batch * period, channels, rows)  # [B * p, C, R]
        features: List[Tensor] = []
        for layer in self.layers:
            h = F.leaky_relu(_column_conv(layer, h), PERIOD_SLOPE)
            features.append(_unfold_columns(h, batch))
        return _unfold_columns(_column_conv(self.output, h), batch), features


def _column_conv(conv: nn.Conv2d, h: Tensor) -> Tensor:
    """A ``(k, 1)`` Conv2d applied to columns laid out as a batch: ``[B * p, C, R] -> [B * p, H, R']``."""
    return F.conv1d(h, conv.weight.squeeze(-1), conv.bias, conv.stride[0], conv.padding[0])


def _unfold_columns(h: Tensor, batch: int) -> Tensor:
    """``[B * p, H, R] -> [B, H, R, p]`` (a view)."""
    return h.reshape(batch, -1, *h.shape[1:]).permute(0, 2, 3, 1)


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's multi-period discriminator over ``[B, C, T]``, one entry per period."""

    def __init__(self, channels: int = 1, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 capacity: int = PERIOD_CAPACITY, max_channels: int = 1024):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [PeriodDiscriminator(channels, p, capacity, max_channels) for p in periods])

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """``x``: ``[B, C, T]``; logits ``[B, 1, T', p]`` for each period ``p``."""
        return [d(x) for d in self.discriminators]


class ScaleDiscriminator(nn.Module):
    """One scale of the MSD: ``[B, C, T] -> ([B, 1, T / 256], features [B, H, T'])``."""

    def __init__(self, channels: int = 1, capacity: int = SCALE_CAPACITY, max_channels: int = 1024):
        super().__init__()
        widths = _widths(capacity, SCALE_GROWTH, SCALE_STRIDED_LAYERS + 1, max_channels)
        layers = [weight_norm(nn.Conv1d(channels, widths[0], SCALE_INPUT_KERNEL,
                                        padding=SCALE_INPUT_KERNEL // 2, padding_mode="reflect"))]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            # MelGAN groups by SCALE_GROUP_WIDTH input channels; gcd keeps odd widths legal
            groups = gcd(c_in, c_out, max(1, c_in // SCALE_GROUP_WIDTH))
            layers.append(weight_norm(nn.Conv1d(c_in, c_out, SCALE_KERNEL, SCALE_STRIDE,
                                                SCALE_KERNEL // 2, groups=groups)))
        layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], SCALE_DENSE_KERNEL,
                                            padding=SCALE_DENSE_KERNEL // 2)))
        self.layers = nn.ModuleList(layers)
        self.output = weight_norm(nn.Conv1d(widths[-1], 1, OUTPUT_KERNEL, padding=OUTPUT_KERNEL // 2))

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``x``: ``[B, C, T]``."""
        return _run(self.layers, self.output, x, SCALE_SLOPE)


class MultiScaleDiscriminator(nn.Module):
    """MelGAN's multi-scale discriminator: scale ``i`` sees ``[B, C, T / 2^i]``."""

    def __init__(self, channels: int = 1, n_scales: int = 3, capacity: int = SCALE_CAPACITY,
                 max_channels: int = 1024):
        super().__init__()
        self.discriminators = nn.ModuleList(
            [ScaleDiscriminator(channels, capacity, max_channels) for _ in range(n_scales)])
        pool_padding = (SCALE_POOL_KERNEL - SCALE_POOL_STRIDE) // 2  # T -> floor(T / 2)
        self.pool = nn.AvgPool1d(SCALE_POOL_KERNEL, SCALE_POOL_STRIDE, pool_padding, count_include_pad=False)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """``x``: ``[B, C, T]``; logits ``[B, 1, T / (256 * 2^i)]`` for scale ``i``."""
        outputs: DiscriminatorOutput = []
        for i, discriminator in enumerate(self.discriminators):
            if i:
                x = self.pool(x)  # [B, C, T / 2^i]
            outputs.append(discriminator(x))
        return outputs


class STFTDiscriminator(nn.Module):
    """One resolution: ``[B, C, T] -> ([B, 1, L, F'], features [B, H, L, F''])`` where the
    complex STFT ``[B, 2C, L, F]`` (real parts, then imaginary parts) is the input."""

    def __init__(self, channels: int = 1, n_fft: int = 1024, capacity: int = STFT_CAPACITY):
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // STFT_HOP_DIVISOR
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        k_time, k_freq = STFT_KERNEL
        layers = [weight_norm(nn.Conv2d(2 * channels, capacity, STFT_KERNEL,
                                        padding=(k_time // 2, k_freq // 2)))]
        for dilation in STFT_DILATIONS:
            layers.append(weight_norm(nn.Conv2d(
                capacity, capacity, STFT_KERNEL, stride=(1, STFT_FREQ_STRIDE), dilation=(dilation, 1),
                padding=(dilation * (k_time // 2), k_freq // 2))))
        head_padding = (STFT_HEAD_KERNEL[0] // 2, STFT_HEAD_KERNEL[1] // 2)
        layers.append(weight_norm(nn.Conv2d(capacity, capacity, STFT_HEAD_KERNEL, padding=head_padding)))
        self.layers = nn.ModuleList(layers)
        self.output = weight_norm(nn.Conv2d(capacity, 1, STFT_HEAD_KERNEL, padding=head_padding))

    def spectrogram(self, x: Tensor) -> Tensor:
        """Complex STFT of ``[B, C, T]`` (T > n_fft / 2) as float32 ``[B, 2C, L, F]``."""
        batch, channels, length = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.float().reshape(batch * channels, length)  # [B * C, T]
            spec = torch.stft(flat, self.n_fft, self.hop, window=self.window.float(), center=True,
                              normalized=True, return_complex=True)  # [B * C, F, L]
        spec = torch.view_as_real(spec)  # [B * C, F, L, 2]
        n_bins, n_frames = spec.shape[1], spec.shape[2]
        spec = spec.reshape(batch, channels, n_bins, n_frames, 2)  # [B, C, F, L, 2]
        spec = spec.permute(0, 4, 1, 3, 2)  # [B, 2, C, L, F]
        return spec.reshape(batch, 2 * channels, n_frames, n_bins)  # [B, 2C, L, F]

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """``x``: ``[B, C, T]``."""
        return _run(self.layers, self.output, self.spectrogram(x), STFT_SLOPE)


class MultiResolutionSTFTDiscriminator(nn.Module):
    """EnCodec-style STFT discriminator over ``[B, C, T]``, one entry per FFT size."""

    def __init__(self, channels: int = 1, n_ffts: Sequence[int] = (1024, 2048, 512),
                 capacity: int = STFT_CAPACITY):
        super().__init__()
        self.discriminators = nn.ModuleList([STFTDiscriminator(channels, n, capacity) for n in n_ffts])

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """``x``: ``[B, C, T]`` with T > max(n_ffts) / 2."""
        return [d(x) for d in self.discriminators]


def _scaled(capacity: int, scale: float) -> int:
    """A width times ``scale``, rounded, at least 1."""
    return max(1, round(capacity * scale))


class CombinedDiscriminator(nn.Module):
    """The families named in ``kinds``, outputs concatenated in that order.

    Args:
        kinds: any of ``"multi_period"``, ``"multi_scale"``, ``"multi_resolution_stft"``.
        channels: audio channels C of the ``[B, C, T]`` input.
        capacity_scale: multiplies every width (each family's capacity and ``max_channels``).
        max_channels: width cap of the period and scale families before scaling
            (512 here, against 1024 in the papers: a third of the parameters).
        periods: periods of the multi-period family.
        n_scales: scales of the multi-scale family.
        n_ffts: FFT sizes of the multi-resolution STFT family.
    """

    def __init__(
        self,
        kinds: Sequence[str] = ("multi_period", "multi_scale"),
        channels: int = 1,
        capacity_scale: float = 1.0,
        max_channels: int = 512,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        n_scales: int = 3,
        n_ffts: Sequence[int] = (1024, 2048, 512),
    ):
        super().__init__()
        if capacity_scale <= 0:
            raise ValueError(f"CombinedDiscriminator: capacity_scale={capacity_scale}, expected > 0")
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown:
            raise ValueError(f"CombinedDiscriminator: unknown discriminator kind(s) {unknown}; "
                             f"expected any of {list(KINDS)}")
        cap = _scaled(max_channels, capacity_scale)
        families: List[nn.Module] = []
        for kind in kinds:
            if kind == "multi_period":
                families.append(MultiPeriodDiscriminator(
                    channels, periods, _scaled(PERIOD_CAPACITY, capacity_scale), cap))
            elif kind == "multi_scale":
                families.append(MultiScaleDiscriminator(
                    channels, n_scales, _scaled(SCALE_CAPACITY, capacity_scale), cap))
            else:
                families.append(MultiResolutionSTFTDiscriminator(
                    channels, n_ffts, _scaled(STFT_CAPACITY, capacity_scale)))
        self.families = nn.ModuleList(families)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """``x``: ``[B, C, T]``; every family's entries, in the order of ``kinds``."""
        outputs: DiscriminatorOutput = []
        for family in self.families:
            outputs.extend(family(x))
        return outputs
