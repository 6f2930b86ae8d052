import math

import numpy as np
import pytest
import torch

from rave_ddsp.data.augment import Compress, Mute, PolarityInversion, RandomGain, SpeedChange, peak_envelope
from rave_ddsp.errors import UserError

SR = 8000
AUGMENTATIONS = {
    "gain": lambda p: RandomGain(-12.0, -3.0, probability=p),
    "mute": lambda p: Mute(probability=p),
    "polarity": lambda p: PolarityInversion(probability=p),
    "compress": lambda p: Compress(threshold_db=(-30.0, -20.0), probability=p),
    "speed": lambda p: SpeedChange(max_semitones=2.0, probability=p),
}


def _crop(channels: int = 2, n: int = 4096) -> torch.Tensor:
    """A decaying 440 Hz tone plus a little noise, ``[C, T]``."""
    t = torch.arange(n) / SR
    tone = 0.8 * torch.sin(2 * math.pi * 440 * t) * torch.exp(-3 * t)
    noise = 0.01 * torch.randn(channels, n, generator=torch.Generator().manual_seed(0))
    return (tone + noise).float()


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentation_changes_the_signal_keeping_shape(name):
    x = _crop()
    before = x.clone()
    y = AUGMENTATIONS[name](1.0)(x, torch.Generator().manual_seed(1), SR)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert (y - x).abs().max() > 1e-3
    assert torch.equal(x, before), "the input must not be modified in place"


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentation_at_probability_zero_is_identity(name):
    x = _crop()
    assert torch.equal(AUGMENTATIONS[name](0.0)(x, torch.Generator().manual_seed(1), SR), x)


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_augmentation_is_deterministic_given_the_generator_seed(name):
    augmentation, x = AUGMENTATIONS[name](0.5), _crop()
    runs = [[augmentation(x, torch.Generator().manual_seed(seed), SR) for seed in range(8)] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_random_gain_stays_in_its_range():
    x = _crop()
    for seed in range(20):
        ratio = RandomGain(-12.0, -3.0)(x, torch.Generator().manual_seed(seed), SR) / x
        gain_db = 20 * torch.log10(ratio.mean())
        assert -12.0 - 1e-4 <= gain_db <= -3.0 + 1e-4
        assert torch.allclose(ratio, ratio.mean())


def test_peak_envelope_matches_a_loop():
    level = np.abs(np.random.default_rng(0).standard_normal(500)) * np.linspace(1, 0, 500)
    expected, previous = np.zeros(500), 0.0
    for n, value in enumerate(level):
        previous = max(value, 0.99 * previous)
        expected[n] = previous
    np.testing.assert_allclose(peak_envelope(level, 0.99), expected, rtol=1e-9)


def test_compressor_reduces_loud_signals_and_leaves_quiet_ones():
    compress = Compress(threshold_db=(-20.0, -20.0), ratio=(4.0, 4.0), attack_ms=1.0, release_ms=50.0, probability=1.0)
    t = torch.arange(SR) / SR
    loud = torch.sin(2 * math.pi * 200 * t).repeat(2, 1)  # 0 dBFS, [2, T]
    y = compress(loud, torch.Generator().manual_seed(0), SR)
    expected = 10 ** (-20 * (1 - 1 / 4) / 20)  # 15 dB of gain reduction once settled
    assert y[:, SR // 2 :].abs().max() == pytest.approx(expected, rel=0.03)
    quiet = 0.01 * loud  # -40 dBFS, below the threshold
    assert torch.allclose(compress(quiet, torch.Generator().manual_seed(0), SR), quiet)


def test_speed_change_moves_the_pitch():
    t = torch.arange(SR) / SR
    x = torch.sin(2 * math.pi * 500 * t)[None]  # [1, T]
    augmentation = SpeedChange(max_semitones=2.0, probability=1.0)
    moved = 0
    for seed in range(4):
        y = augmentation(x, torch.Generator().manual_seed(seed), SR)
        assert y.shape == x.shape
        peak_hz = torch.fft.rfft(y[0, : SR // 2]).abs().argmax().item() * 2  # 2 Hz bins
        assert 500 * 2 ** (-2 / 12) - 4 <= peak_hz <= 500 * 2 ** (2 / 12) + 4
        moved += abs(peak_hz - 500) > 4
    assert moved >= 2


@pytest.mark.parametrize("make", [lambda: RandomGain(0.0, -3.0), lambda: Mute(probability=1.5),
                                  lambda: Compress(ratio=(0.5, 2.0)), lambda: SpeedChange(max_semitones=0.0)],
                         ids=["gain-range", "probability", "ratio", "semitones"])
def test_bad_arguments_raise_user_errors(make):
    with pytest.raises(UserError):
        make()
