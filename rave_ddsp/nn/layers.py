"""Convolution building blocks over cached_conv, streamable and TorchScript-able.

Every block takes the same three keyword arguments:

* ``causal``: pad on the left only. The model then never looks ahead, and its streaming
  version has no delay beyond the PQMF's. Otherwise padding is centred (better quality,
  but each layer's look-ahead becomes delay when streaming). The encoder and decoder can
  also make only their coarse-rate layers causal (:func:`padding_is_causal`).
* ``streaming``: build with cached convolutions (:class:`CachedConv1d`). The zero padding
  on the left is replaced by the end of the previous call, so a signal fed in chunks gives
  the same output as in one call; the look-ahead is turned into a delay.
* ``cumulative_delay``: the delay (in frames at the block's input rate) that the streaming
  version has already accumulated before this block. A strided convolution adds to it
  just enough to keep its output frames aligned with the non-streaming ones.

and exposes ``cumulative_delay``: the delay of its streaming output with respect to its
non-streaming output, in frames at the block's output rate. Streaming and non-streaming
versions share parameter names, so one state dict loads into both.

Convolutions use weight normalisation (a parametrization) during training;
:func:`remove_weight_norm` folds it into plain weights before TorchScript export.
"""
from typing import List, Optional, Tuple

import cached_conv as cc
import cached_conv.convs as cc_convs
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


def padding_is_causal(period: int, causal: bool, max_centred_period: Optional[int]) -> bool:
    """Whether a layer pads causally: always when ``causal``; else when its input frames span
    more than ``max_centred_period`` band frames (None: never).

    Look-ahead costs delay in proportion to the frame period, so a budget is best spent on the
    high-rate layers: with ``max_centred_period`` set, the layers at coarser rates (the
    latent-rate layers above all) are causal and the others stay centred.
    """
    return causal or (max_centred_period is not None and period > max_centred_period)


def conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    causal: bool = False,
    streaming: bool = False,
    cumulative_delay: int = 0,
    weight_norm: bool = True,
) -> nn.Module:
    """A 1-d convolution ``[B, H_in, T] -> [B, H_out, T / stride]`` (T a multiple of stride).

    Padding keeps ``T / stride`` output frames: ``(k - 1) * dilation`` samples in all,
    on the left when ``causal``, else split with the extra sample on the right.
    """
    padding = cc.get_padding(kernel_size, stride, dilation, mode="causal" if causal else "centered")
    conv_class = CachedConv1d if streaming else Conv1d
    conv = conv_class(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        dilation=dilation,
        padding=padding,
        cumulative_delay=cumulative_delay,
    )
    if not streaming:
        # cc.Conv1d does not track delay; the non-streaming twin of a layer reports what
        # its streaming version would, so that delays can be computed without building it.
        conv.cumulative_delay = streaming_delay(padding[1], stride, cumulative_delay)
    if weight_norm:
        conv = nn.utils.parametrizations.weight_norm(conv)
    return conv


NATIVE_CONV_LIMIT = 20480
"""Input size (elements) up to which PyTorch's CPU convolution of one example skips oneDNN."""


def convolve(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, dilation: int,
             native_limit: int = NATIVE_CONV_LIMIT, padding: int = 0) -> Tensor:
    """``conv1d`` of ``x [B, H_in, T]`` zero-padded by ``padding`` on both sides, fast for short inputs.

    Long inputs go to ``conv1d``, which pads inside the kernel (no padded copy of a long input).

    For one example of at most ``NATIVE_CONV_LIMIT`` elements, PyTorch's CPU convolution
    uses its native kernels instead of oneDNN: slow for wide layers (a 768-channel kernel-3
    convolution of 4 frames takes 10x longer than the same product done as a matrix
    product), and very slow when dilated (columns gathered one element at a time). Such
    inputs (a few frames at the low rates: short offline calls) have their taps gathered
    time-major, ``[B, T_out, H_in * k]`` (:func:`gather_taps`), and multiplied by the weight
    viewed as ``[H_out, H_in * k]``: the same sums with the same weights, as one GEMM.
    """
    if x.is_cuda or x.shape[0] > 1 or x.numel() > native_limit:
        return nn.functional.conv1d(x, weight, bias, stride, padding, dilation)
    if padding:
        x = nn.functional.pad(x, (padding, padding))
    kernel = weight.shape[-1]
    if kernel == 1 and stride == 1:
        return nn.functional.linear(x.transpose(1, 2), weight[:, :, 0], bias).transpose(1, 2)  # [B, H_out, T]
    frames = (x.shape[-1] - (kernel - 1) * dilation - 1) // stride + 1
    columns = gather_taps(x, kernel, stride, dilation, frames, time_major=True)  # [B, T_out, H_in * k]
    out = nn.functional.linear(columns, weight.reshape(weight.shape[0], -1), bias)  # [B, T_out, H_out]
    return out.transpose(1, 2)  # [B, H_out, T_out]


def gather_taps(x: Tensor, kernel: int, stride: int, dilation: int, frames: int, time_major: bool) -> Tensor:
    """The taps of a convolution over ``x [B, H_in, L]`` for ``frames`` outputs, read as one strided view
    and copied once: ``[B, T_out, H_in * k]`` (``time_major``) or ``[B, H_in * k, T_out]``, channels
    outer and taps inner, the order of a weight ``[H_out, H_in, k]`` viewed as ``[H_out, H_in * k]``."""
    batch, channels, step = x.shape[0], x.shape[1], x.stride(2)
    frame_stride, tap_stride = stride * step, dilation * step
    if time_major:
        view = x.as_strided([batch, frames, channels, kernel],
                            [x.stride(0), frame_stride, x.stride(1), tap_stride], x.storage_offset())
        return view.reshape(batch, frames, channels * kernel)
    view = x.as_strided([batch, channels, kernel, frames],
                        [x.stride(0), x.stride(1), tap_stride, frame_stride], x.storage_offset())
    return view.reshape(batch, channels * kernel, frames)


class Conv1d(cc_convs.Conv1d):
    """cached_conv's zero-padded convolution, with :func:`convolve` for dilated kernels."""

    def forward(self, x: Tensor) -> Tensor:
        left, right = self._pad[0], self._pad[1]
        if left == right:
            return convolve(x, self.weight, self.bias, self.stride[0], self.dilation[0], padding=left)
        return convolve(nn.functional.pad(x, self._pad), self.weight, self.bias, self.stride[0], self.dilation[0])


TIME_MAJOR_LIMIT = 32
"""Output frames from which :class:`CachedConv1d` multiplies channel-major (see there)."""


class CachedConv1d(nn.Conv1d):
    """A streaming convolution: the zero padding on the left is replaced by the end of the previous call.

    One cache holds the last ``padding + stride_delay`` input samples (``stride_delay`` delays the input
    so that a strided layer's output frames fall where the non-streaming ones do, see
    :func:`streaming_delay`). Each call appends the new samples to the cache, reads the kernel's taps
    out of that buffer as one strided view (:func:`gather_taps`) and multiplies them by the weight in
    one batched GEMM. A streaming model calls every layer on a few frames, so the number of
    operations per call, not their arithmetic, is what costs time; this keeps it at about ten per
    layer.

    The cache is allocated on the first call with ``cached_conv.convs.MAX_BATCH_SIZE`` rows (the export
    sets it) and a call of batch B uses its first B rows. The first call also stores the weight as the
    ``[H_in * k, H_out]`` matrix the products use: load the weights before it (a streaming module
    is for inference; the export builds it, loads them, then makes that call).

    Below ``TIME_MAJOR_LIMIT`` output frames the product is time-major, ``[T_out, H_in * k] x
    [H_in * k, H_out]``: for a few frames MKL reads a wide weight once for all of them this way
    (up to 2x faster than ``[H_out, H_in * k] x [H_in * k, T_out]``); above it, channel-major,
    where gathering the taps time-major costs more than the product saves.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 padding: Tuple[int, int] = (0, 0), cumulative_delay: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.cumulative_delay = streaming_delay(padding[1], stride, cumulative_delay)
        self.stride_delay = self.cumulative_delay * stride - padding[1] - cumulative_delay
        self.context = padding[0] + padding[1] + self.stride_delay
        self.span = (kernel_size - 1) * dilation
        self.time_major_limit = TIME_MAJOR_LIMIT
        self.initialized = 0
        self.register_buffer("cache", torch.zeros(0), persistent=False)
        self.register_buffer("matrix", torch.zeros(0), persistent=False)  # the weight as [H_in * k, H_out]

    @torch.jit.unused
    @torch.no_grad()
    def init_cache(self, x: Tensor) -> None:
        self.cache = torch.zeros(cc_convs.MAX_BATCH_SIZE, x.shape[1], self.context, dtype=x.dtype, device=x.device)
        self.matrix = self.weight.detach().reshape(self.out_channels, -1).t().contiguous()
        if not parametrize.is_parametrized(self, "weight"):
            # the weight becomes a view of the matrix: one copy in memory and in an exported file
            self.weight.data = self.matrix.t().reshape(self.weight.shape)
        self.initialized = 1

    def forward(self, x: Tensor) -> Tensor:
        if not self.initialized:
            self.init_cache(x)
        batch = x.shape[0]
        if self.context > 0:
            x = torch.cat([self.cache[:batch], x], -1)  # [B, H_in, context + T]
            self.cache[:batch] = x[..., x.shape[-1] - self.context:]
        kernel, stride, dilation = self.kernel_size[0], self.stride[0], self.dilation[0]
        frames = (x.shape[-1] - self.stride_delay - self.span - 1) // stride + 1
        gather = kernel > 1 or stride > 1  # else x is its own taps
        bias = self.bias
        if frames >= self.time_major_limit:  # channel-major: [H_out, H_in * k] x [H_in * k, T_out]
            if gather:
                x = gather_taps(x, kernel, stride, dilation, frames, time_major=False)
            matrix = self.matrix.t().expand(batch, -1, -1)
            if bias is None:
                return torch.bmm(matrix, x)
            return torch.baddbmm(bias.unsqueeze(-1), matrix, x)  # [B, H_out, T_out]
        columns = gather_taps(x, kernel, stride, dilation, frames, time_major=True) if gather else x.transpose(1, 2)
        matrix = self.matrix.expand(batch, -1, -1)
        out = torch.bmm(columns, matrix) if bias is None else torch.baddbmm(bias, columns, matrix)  # [B, T_out, H_out]
        return out.transpose(1, 2)  # [B, H_out, T_out], time-major in memory


def streaming_delay(right_padding: int, stride: int, cumulative_delay: int) -> int:
    """Output delay of a cached convolution, in output frames (see module docstring).

    The look-ahead ``right_padding`` becomes delay; the input's own delay is rounded up to
    a multiple of ``stride`` so that output frames stay aligned.
    """
    total = right_padding + cumulative_delay
    return (total + (stride - total % stride) % stride) // stride


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrization under ``module`` into a plain weight (in place)."""
    for child in module.modules():
        if parametrize.is_parametrized(child, "weight"):
            parametrize.remove_parametrizations(child, "weight", leave_parametrized=True)
    return module


class _SnakeFunction(torch.autograd.Function):
    """Snake with its derivatives in closed form, for training: with ``a = alpha x``,
    ``dy/dx = 1 + sin(2a) alpha / (alpha + eps)`` and
    ``dy/dalpha = x sin(2a) / (alpha + eps) - sin(a)^2 / (alpha + eps)^2``.
    Only ``x`` is kept for the backward pass (autograd's own graph of the formula keeps three
    tensors of ``x``'s size; README, "Benchmarks", has the time and memory this saves)."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, epsilon: Tensor) -> Tensor:
        ctx.save_for_backward(x, alpha, epsilon)
        return _snake_in_place(x, alpha, epsilon)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, alpha, epsilon = ctx.saved_tensors
        inverse = 1 / (alpha + epsilon)
        angle = alpha * x
        sine = torch.sin(angle)
        angle.mul_(2).sin_()  # sin(2a)
        grad_x = grad_alpha = None
        if ctx.needs_input_grad[1]:
            reduce = [d for d in range(x.ndim) if alpha.shape[d] == 1]
            sine.square_().mul_(grad)  # g sin(a)^2
            grad_alpha = (torch.sum(grad * angle * x, reduce, keepdim=True) * inverse
                          - torch.sum(sine, reduce, keepdim=True) * inverse * inverse)
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(grad, grad, angle.mul_(alpha * inverse)).to(x.dtype)
        return grad_x, grad_alpha, None


def _snake_in_place(x: Tensor, alpha: Tensor, epsilon: Tensor) -> Tensor:
    """``x + sin(alpha x)^2 / (alpha + epsilon)`` in one fresh buffer (the same arithmetic as the
    formula, half its time on long signals, where four fresh tensors cost more than the sine)."""
    wave = alpha * x
    wave.sin_()
    wave.mul_(wave)
    return torch.addcdiv(x, wave, alpha + epsilon, out=wave)


class Snake(nn.Module):
    """Snake activation ``x + sin(alpha x)^2 / alpha`` with a learned ``alpha`` per channel.

    A periodic inductive bias that helps networks keep harmonic structure (Ziyin et al.,
    2020; used by BigVGAN and DAC). ``[B, H, T] -> [B, H, T]``. In training (eager) the
    derivatives are the closed-form ones of :class:`_SnakeFunction`; without a graph, and in
    TorchScript (exports), the forward formula alone.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))
        # a tensor, not a Python float: adding a float converts it to a tensor on every call
        self.register_buffer("epsilon", torch.tensor(1e-9), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            if torch.jit.is_scripting():
                wave = torch.sin(alpha * x)
                return torch.addcdiv(x, wave * wave, alpha + self.epsilon)
            return self.with_closed_form_gradient(x)
        return _snake_in_place(x, alpha, self.epsilon)

    @torch.jit.unused
    def with_closed_form_gradient(self, x: Tensor) -> Tensor:
        return _SnakeFunction.apply(x, self.alpha, self.epsilon)


def activation(name: str, channels: int) -> nn.Module:
    """``"leaky_relu"`` (slope 0.2), ``"snake"`` or ``"silu"``."""
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "snake":
        return Snake(channels)
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; expected 'leaky_relu', 'snake' or 'silu'")


class DelayLine(nn.Module):
    """Delay ``[B, H, T]`` by a fixed number of frames, carried across calls (streaming only).

    Used to keep parallel branches aligned when one of them has more look-ahead. In a
    non-streaming model it is the identity.
    """

    def __init__(self, delay: int, streaming: bool):
        super().__init__()
        self.delay = cc.CachedPadding1d(delay, crop=True) if streaming and delay > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.delay(x)


class ResidualUnit(nn.Module):
    """``x + conv1x1(act(conv_k,dilated(act(x))))``: ``[B, H, T] -> [B, H, T]``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation: int,
        *,
        activation_name: str = "leaky_relu",
        causal: bool = False,
        streaming: bool = False,
        cumulative_delay: int = 0,
    ):
        super().__init__()
        dilated = conv1d(channels, channels, kernel_size, dilation=dilation, causal=causal,
                         streaming=streaming, cumulative_delay=cumulative_delay)
        pointwise = conv1d(channels, channels, 1, streaming=streaming,
                           cumulative_delay=dilated.cumulative_delay)
        self.branch = nn.Sequential(
            activation(activation_name, channels), dilated, activation(activation_name, channels), pointwise
        )
        self.cumulative_delay = pointwise.cumulative_delay
        self.skip = DelayLine(self.cumulative_delay - cumulative_delay, streaming)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.branch(x)


class ResidualStack(nn.Module):
    """Residual units with growing dilations (e.g. 1, 3, 9): ``[B, H, T] -> [B, H, T]``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilations: List[int],
        *,
        activation_name: str = "leaky_relu",
        causal: bool = False,
        streaming: bool = False,
        cumulative_delay: int = 0,
    ):
        super().__init__()
        units = []
        for dilation in dilations:
            unit = ResidualUnit(channels, kernel_size, dilation, activation_name=activation_name,
                                causal=causal, streaming=streaming, cumulative_delay=cumulative_delay)
            cumulative_delay = unit.cumulative_delay
            units.append(unit)
        self.units = nn.Sequential(*units)
        self.cumulative_delay = cumulative_delay

    def forward(self, x: Tensor) -> Tensor:
        return self.units(x)


class Upsample(nn.Module):
    """Sub-pixel upsampling: a convolution to ``H_out * r`` channels, then channels to time.

    ``[B, H_in, T] -> [B, H_out, T * r]``. Unlike a transposed convolution it has no
    overlapping kernels (no checkerboard artefacts) and streams like any convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ratio: int,
        kernel_size: int = 3,
        *,
        causal: bool = False,
        streaming: bool = False,
        cumulative_delay: int = 0,
    ):
        super().__init__()
        self.ratio = ratio
        self.out_channels = out_channels
        self.conv = conv1d(in_channels, out_channels * ratio, kernel_size, causal=causal,
                           streaming=streaming, cumulative_delay=cumulative_delay)
        self.cumulative_delay = self.conv.cumulative_delay * ratio

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)  # [B, H_out * r, T]
        batch, frames = y.shape[0], y.shape[-1]
        y = y.reshape(batch, self.out_channels, self.ratio, frames)  # [B, H_out, r, T]
        return y.transpose(2, 3).reshape(batch, self.out_channels, frames * self.ratio)  # [B, H_out, T * r]
