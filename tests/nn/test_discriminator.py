"""Discriminators: output structure and shapes, the period fold, gradients, autocast, and
one short hinge-loss training run. Widths are tiny so that the whole file runs in seconds."""
import math

import pytest
import torch

from rave_ddsp.nn import discriminator as D
from rave_ddsp.train import losses

PERIODS = (2, 3, 5)
N_FFTS = (128, 256, 64)
N_SCALES = 3
TINY = dict(capacity=4)      # every family, with max_channels=16 where it applies


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run ~20x faster on one thread than oversubscribed on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ceil_repeat(n: int, divisor: int, times: int) -> int:
    """ceil(ceil(n / d) / d) ... ``times`` times: the length after strided 'same' convs."""
    for _ in range(times):
        n = math.ceil(n / divisor)
    return n


def _tiny(kind: str, channels: int) -> torch.nn.Module:
    if kind == "multi_period":
        return D.MultiPeriodDiscriminator(channels, PERIODS, max_channels=16, **TINY)
    if kind == "multi_scale":
        return D.MultiScaleDiscriminator(channels, N_SCALES, max_channels=16, **TINY)
    return D.MultiResolutionSTFTDiscriminator(channels, N_FFTS, **TINY)


def _expected_logit_shapes(kind: str, batch: int, length: int):
    """Logit shapes derived from the papers' layer arithmetic, one per sub-discriminator."""
    if kind == "multi_period":
        return [(batch, 1, _ceil_repeat(math.ceil(length / p), D.PERIOD_STRIDE, D.PERIOD_STRIDED_LAYERS), p)
                for p in PERIODS]
    if kind == "multi_scale":
        shapes, n = [], length
        for i in range(N_SCALES):
            n = n if i == 0 else n // D.SCALE_POOL_STRIDE
            shapes.append((batch, 1, _ceil_repeat(n, D.SCALE_STRIDE, D.SCALE_STRIDED_LAYERS)))
        return shapes
    return [(batch, 1, length // (n_fft // D.STFT_HOP_DIVISOR) + 1,
             _ceil_repeat(n_fft // 2 + 1, D.STFT_FREQ_STRIDE, len(D.STFT_DILATIONS)))
            for n_fft in N_FFTS]


@pytest.mark.parametrize("length", [1024, 1009], ids=["T=1024", "T=1009-prime"])
@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize("kind", D.KINDS)
def test_output_structure_and_shapes(kind, channels, length):
    batch = 3
    torch.manual_seed(0)
    out = _tiny(kind, channels)(torch.randn(batch, channels, length))
    expected = _expected_logit_shapes(kind, batch, length)
    assert isinstance(out, list) and len(out) == len(expected)
    for (logits, features), shape in zip(out, expected):
        assert tuple(logits.shape) == shape            # channels are not folded into the batch
        assert len(features) >= 4
        for feature in features:
            assert feature.shape[0] == batch and feature.ndim == logits.ndim
        assert torch.isfinite(logits).all()


def test_combined_concatenates_families_in_order():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 1024)
    kinds = ("multi_resolution_stft", "multi_period")
    combined = D.CombinedDiscriminator(kinds, capacity_scale=0.125, max_channels=128,
                                       periods=PERIODS, n_ffts=N_FFTS)
    out = combined(x)
    assert len(out) == len(N_FFTS) + len(PERIODS)
    assert [o[0].ndim for o in out] == [4] * len(out)
    assert [o[0].shape[-1] for o in out[len(N_FFTS):]] == list(PERIODS)
    # each family's output is exactly that family run alone
    mpd_alone = combined.families[1](x)
    for (a, _), (b, _) in zip(out[len(N_FFTS):], mpd_alone):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("period", [2, 3, 7])
def test_fold_period_puts_samples_p_apart_in_one_column(period):
    length = 12 * period
    x = torch.randn(2, 3, length)
    folded = D.fold_period(x, period)
    assert folded.shape == (2, 3, 12, period)
    t = torch.arange(length)
    torch.testing.assert_close(folded[..., t // period, t % period], x)
    # a signal of period p: every column is constant, columns differ
    pattern = torch.randn(period)
    periodic = pattern.repeat(length // period).expand(2, 3, length)
    columns = D.fold_period(periodic, period)
    torch.testing.assert_close(columns, pattern.expand_as(columns))
    assert not torch.allclose(columns[..., 0], columns[..., 1])


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_period_columns_run_as_the_papers_2d_convolutions(channels):
    """The columns run as a batch of 1-d convolutions; the result is the (k, 1) Conv2d stack on
    the folded [B, C, T / p, p] view, as in HiFi-GAN, with the same weights."""
    torch.manual_seed(0)
    mpd = D.MultiPeriodDiscriminator(channels, PERIODS, max_channels=16, **TINY)
    x = torch.randn(3, channels, 1009)
    for discriminator, (logits, features) in zip(mpd.discriminators, mpd(x)):
        h = D.fold_period(x, discriminator.period)
        for layer, feature in zip(discriminator.layers, features):
            h = torch.nn.functional.leaky_relu(layer(h), D.PERIOD_SLOPE)
            torch.testing.assert_close(feature, h)
        torch.testing.assert_close(logits, discriminator.output(h))


def test_fold_period_pads_odd_lengths_by_reflection():
    x = torch.arange(10.0).reshape(1, 1, 10)
    folded = D.fold_period(x, 4)  # 10 -> 12 samples: ..., 8, 9, then 8, 7 mirrored
    assert folded.shape == (1, 1, 3, 4)
    assert folded.flatten().tolist() == list(range(10)) + [8.0, 7.0]
    with pytest.raises(ValueError, match="shorter than period 11"):
        D.fold_period(torch.randn(1, 1, 5), 11)


def test_gradients_reach_both_input_channels_and_every_parameter():
    torch.manual_seed(0)
    combined = D.CombinedDiscriminator(D.KINDS, channels=2, capacity_scale=0.125, max_channels=128,
                                       periods=PERIODS, n_ffts=N_FFTS)
    real = torch.randn(2, 2, 1024)
    fake = torch.randn(2, 2, 1024, requires_grad=True)
    out_real, out_fake = combined(real), combined(fake)
    generator_loss = sum(losses.hinge_generator_loss(lf) + losses.feature_matching_loss(fr, ff)
                         for (_, fr), (lf, ff) in zip(out_real, out_fake))
    generator_loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()
    assert (fake.grad[:, 0].abs().sum() > 0) and (fake.grad[:, 1].abs().sum() > 0)
    for name, parameter in combined.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_stft_is_computed_in_float32_under_bf16_autocast():
    # torch.stft rejects bfloat16 on CPU, so this fails unless the STFT is done in float32
    torch.manual_seed(0)
    combined = D.CombinedDiscriminator(D.KINDS, capacity_scale=0.125, max_channels=128,
                                       periods=PERIODS, n_ffts=N_FFTS)
    x = torch.randn(2, 1, 1024)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spec = combined.families[2].discriminators[0].spectrogram(x.bfloat16())
        out = combined(x.bfloat16())
    assert spec.dtype == torch.float32 and spec.shape == (2, 2, 1024 // 32 + 1, 65)
    assert all(torch.isfinite(logits.float()).all() for logits, _ in out)
    eager = combined(x)
    for (a, _), (b, _) in zip(out, eager):  # bf16 is close to float32, not a different model
        assert (a.float() - b).abs().max() < 0.1 * b.abs().max() + 0.05


def test_stft_input_is_real_then_imaginary_parts_per_channel():
    x = torch.randn(2, 3, 1000)
    stft = D.STFTDiscriminator(channels=3, n_fft=128, capacity=4)
    spec = stft.spectrogram(x)  # [B, 2C, L, F]
    reference = torch.stft(x.reshape(6, 1000), 128, 32, window=torch.hann_window(128), normalized=True,
                           return_complex=True).reshape(2, 3, 65, -1).transpose(-1, -2)  # [B, C, L, F]
    torch.testing.assert_close(spec, torch.cat([reference.real, reference.imag], dim=1))


def test_unknown_kind_names_itself_and_the_valid_kinds():
    with pytest.raises(ValueError, match=r"'multi_bogus'.*multi_period.*multi_scale.*multi_resolution_stft"):
        D.CombinedDiscriminator(("multi_period", "multi_bogus"))
    with pytest.raises(ValueError, match="capacity_scale=0"):
        D.CombinedDiscriminator(capacity_scale=0)


def _n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_count_is_in_the_stated_range():
    # documented in rave_ddsp/nn/discriminator.py: 19.5 M (MPD 14.9 M + MSD 4.6 M at width 512),
    # below RAVE v2's 27.1 M and the 58 M of these two families at the papers' width 1024
    n = _n_parameters(D.CombinedDiscriminator())
    assert 19.0e6 < n < 20.0e6, n
    half = _n_parameters(D.CombinedDiscriminator(capacity_scale=0.5))
    assert 0.2 * n < half < 0.3 * n  # widths halve, so parameters fall about fourfold


def test_hinge_training_separates_real_from_noise():
    torch.manual_seed(0)
    combined = D.CombinedDiscriminator(D.KINDS, capacity_scale=0.125, max_channels=128,
                                       periods=PERIODS, n_ffts=N_FFTS)
    optimizer = torch.optim.Adam(combined.parameters(), lr=5e-3, betas=(0.5, 0.9))
    t = torch.arange(1024) / 16000
    real = 0.5 * torch.sin(2 * math.pi * (200 + 800 * torch.rand(4, 1, 1)) * t)  # [4, 1, 1024] sines
    fake = 0.5 * torch.randn(4, 1, 1024)
    history = []
    for _ in range(8):
        out_real, out_fake = combined(real), combined(fake)
        loss = sum(losses.hinge_discriminator_loss(r, f)
                   for (r, _), (f, _) in zip(out_real, out_fake)) / len(out_real)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # at initialisation every logit is ~0, so the loss starts at the hinge's 2
    assert history[0] == pytest.approx(2.0, abs=0.01)
    assert all(b <= a for a, b in zip(history, history[1:])) and history[-1] < 1.9, history
    with torch.no_grad():
        margin = [r.mean() - f.mean() for (r, _), (f, _) in zip(combined(real), combined(fake))]
    assert sum(margin) > 0, margin
