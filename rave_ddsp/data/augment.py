"""Training-time augmentations of one crop ``[C, T]``.

Each augmentation is a small class with typed constructor arguments (so a YAML config can
list them under ``data.augmentations`` with ``class_path``/``init_args``) and a
``probability`` of being applied. Calls take the crop's ``torch.Generator``: the same seed
gives the same result, whatever the DataLoader worker. Only the training set is augmented.
"""
import abc
import fractions
import math
from typing import Tuple

import numpy as np
import scipy.signal
import torch
import torchaudio
from torch import Tensor

from rave_ddsp.errors import UserError

SPEED_RATIO_DENOMINATOR = 200  # speed ratios are rounded to p/q with q <= this (< 0.1 semitone steps)
COMPRESSOR_FLOOR = 1e-6  # -120 dBFS: the level detector's floor (keeps log10 finite on silence)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _check_range(name: str, value: Tuple[float, float]) -> Tuple[float, float]:
    low, high = (float(v) for v in value)
    if low > high:
        raise UserError(f"{name}: expected (low, high) with low <= high, got {value}")
    return low, high


class Augmentation(abc.ABC):
    """Base class: applies :meth:`apply` with probability ``probability``."""

    def __init__(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise UserError(f"{type(self).__name__}: probability must be in [0, 1], got {probability}")
        self.probability = float(probability)

    def __call__(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        """``x``: float32 ``[C, T]`` -> float32 ``[C, T]`` (never modified in place)."""
        if float(torch.rand((), generator=generator)) >= self.probability:
            return x
        return self.apply(x, generator, sample_rate)

    @abc.abstractmethod
    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        """The transform itself, ``[C, T] -> [C, T]``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class RandomGain(Augmentation):
    """Multiply by a gain drawn uniformly in ``[min_db, max_db]`` dB."""

    def __init__(self, min_db: float = -12.0, max_db: float = 0.0, probability: float = 1.0) -> None:
        super().__init__(probability)
        self.min_db, self.max_db = _check_range("RandomGain (min_db, max_db)", (min_db, max_db))

    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        return x * 10 ** (_uniform(generator, self.min_db, self.max_db) / 20)


class Mute(Augmentation):
    """Replace the crop by silence, so the model learns to output silence."""

    def __init__(self, probability: float = 0.05) -> None:
        super().__init__(probability)

    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        return torch.zeros_like(x)


class PolarityInversion(Augmentation):
    """Flip the sign of the waveform (inaudible, but the decoder must not rely on polarity)."""

    def __init__(self, probability: float = 0.5) -> None:
        super().__init__(probability)

    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        return -x


def peak_envelope(level: np.ndarray, release_coefficient: float) -> np.ndarray:
    """Peak follower with instant attack and exponential release, without a Python loop.

    ``y[n] = max(level[n], r * y[n-1]) = max_{m <= n} level[m] r^(n-m)``, computed in the log
    domain as ``n log r + cummax(log level[m] - m log r)``.

    Args:
        level: non-negative ``[T]``.
        release_coefficient: ``r`` in ``(0, 1)``.

    Returns:
        ``[T]``, same dtype float64.
    """
    log_r = math.log(release_coefficient)
    n = np.arange(len(level))
    log_level = np.log(np.maximum(level, COMPRESSOR_FLOOR))
    return np.exp(n * log_r + np.maximum.accumulate(log_level - n * log_r))


class Compress(Augmentation):
    """Feed-forward compressor (stereo-linked) with threshold and ratio drawn per crop.

    The level detector is a peak follower (:func:`peak_envelope`, ``release_ms``) smoothed
    by a one-pole low-pass (``attack_ms``, scipy ``lfilter``); above the threshold the gain
    falls by ``(1 - 1/ratio)`` dB per dB. No make-up gain (combine with :class:`RandomGain`).
    """

    def __init__(self, threshold_db: Tuple[float, float] = (-30.0, -10.0), ratio: Tuple[float, float] = (2.0, 8.0),
                 attack_ms: float = 5.0, release_ms: float = 100.0, probability: float = 0.5) -> None:
        super().__init__(probability)
        self.threshold_db = _check_range("Compress threshold_db", threshold_db)
        self.ratio = _check_range("Compress ratio", ratio)
        if self.ratio[0] < 1.0 or attack_ms <= 0 or release_ms <= 0:
            raise UserError(f"Compress: expected ratio >= 1 and attack_ms, release_ms > 0; "
                            f"got ratio={ratio}, attack_ms={attack_ms}, release_ms={release_ms}")
        self.attack_ms, self.release_ms = float(attack_ms), float(release_ms)

    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        threshold = _uniform(generator, *self.threshold_db)
        ratio = _uniform(generator, *self.ratio)
        attack = math.exp(-1000.0 / (self.attack_ms * sample_rate))
        release = math.exp(-1000.0 / (self.release_ms * sample_rate))
        level = np.abs(x.double().numpy()).max(axis=0)  # [T] linked across channels
        envelope = scipy.signal.lfilter([1 - attack], [1, -attack], peak_envelope(level, release))  # [T]
        level_db = 20 * np.log10(np.maximum(envelope, COMPRESSOR_FLOOR))
        gain_db = np.minimum(0.0, (threshold - level_db) * (1 - 1 / ratio))
        return x * torch.from_numpy(10 ** (gain_db / 20)).to(x.dtype)  # [C, T] * [T]


class SpeedChange(Augmentation):
    """Play faster or slower (pitch and tempo together) by up to ``max_semitones``.

    Resampled with torchaudio by a rational ratio. Slowing down crops a random window of
    ``T`` samples; speeding up leaves the crop short by up to ``1 - 2^(-s/12)`` (5.6 % at
    one semitone), filled by reflecting its end.
    """

    def __init__(self, max_semitones: float = 1.0, probability: float = 0.5) -> None:
        super().__init__(probability)
        if not 0 < max_semitones <= 6:
            raise UserError(f"SpeedChange: max_semitones must be in (0, 6], got {max_semitones}")
        self.max_semitones = float(max_semitones)

    def apply(self, x: Tensor, generator: torch.Generator, sample_rate: int) -> Tensor:
        semitones = _uniform(generator, -self.max_semitones, self.max_semitones)
        speed = fractions.Fraction(2 ** (semitones / 12)).limit_denominator(SPEED_RATIO_DENOMINATOR)
        if speed == 1:
            return x
        y = torchaudio.functional.resample(x, speed.numerator, speed.denominator)  # [C, T / speed]
        length = x.shape[-1]
        if y.shape[-1] >= length:
            start = int(torch.randint(0, y.shape[-1] - length + 1, (), generator=generator))
            return y[:, start : start + length]
        return torch.nn.functional.pad(y, (0, length - y.shape[-1]), mode="reflect")
