"""Spectral distances and adversarial losses against values known in closed form."""
import math

import pytest
import torch

from rave_ddsp.train import losses


def test_identical_signals_are_at_distance_zero():
    x = torch.randn(2, 3, 4096)
    assert float(losses.MultiScaleSTFT()(x, x)) == 0.0


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_a_gain_gives_its_closed_form_distance(gain):
    # S(g x) = g S(x): spectral convergence |g - 1|, log distance |ln g| (floors 60/100 dB down: negligible)
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8192)
    linear_only = losses.MultiScaleSTFT(log_weight=0.0)
    log_only = losses.MultiScaleSTFT(linear_weight=0.0)
    assert float(linear_only(x, gain * x)) == pytest.approx(abs(gain - 1), rel=1e-4)
    assert float(log_only(x, gain * x)) == pytest.approx(abs(math.log(gain)), rel=1e-3)


def test_weights_scale_their_terms():
    x, y = torch.randn(1, 1, 4096), torch.randn(1, 1, 4096)
    both = losses.MultiScaleSTFT(linear_weight=2.0, log_weight=3.0)(x, y)
    linear = losses.MultiScaleSTFT(linear_weight=1.0, log_weight=0.0)(x, y)
    log = losses.MultiScaleSTFT(linear_weight=0.0, log_weight=1.0)(x, y)
    assert float(both) == pytest.approx(float(2 * linear + 3 * log), rel=1e-5)


def test_mel_scales_and_bands_input():
    distance = losses.MultiScaleSTFT(n_ffts=(512, 128), n_mels=(64, 0), sample_rate=16000)
    x = torch.randn(2, 16, 2048)  # e.g. 16 PQMF bands
    y = x + 0.1 * torch.randn_like(x)
    d = distance(x, y)
    assert d.ndim == 0 and 0 < float(d) < float(distance(x, torch.randn_like(x)))
    with pytest.raises(ValueError, match="one per scale"):
        losses.MultiScaleSTFT(n_ffts=(512, 128), n_mels=(64,))


def test_distance_has_useful_gradients():
    x = torch.randn(1, 1, 4096)
    y = torch.zeros(1, 1, 4096, requires_grad=True)  # silence: log and |.| at zero
    losses.MultiScaleSTFT()(x, y).backward()
    assert torch.isfinite(y.grad).all()


def test_adversarial_losses_known_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert float(losses.hinge_discriminator_loss(real, fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1.5) / 2)
    assert float(losses.hinge_generator_loss(fake)) == pytest.approx(0.75)
    assert float(losses.least_squares_discriminator_loss(real, fake)) == pytest.approx((1 + 0.25) / 2 + (4 + 0.25) / 2)
    assert float(losses.least_squares_generator_loss(fake)) == pytest.approx((9 + 0.25) / 2)


def test_feature_matching():
    real = [torch.ones(2, 4), 2 * torch.ones(2, 3, 5)]
    assert float(losses.feature_matching_loss(real, [r.clone() for r in real])) == 0.0
    fake = [torch.zeros(2, 4, requires_grad=True), 3 * torch.ones(2, 3, 5, requires_grad=True)]
    assert float(losses.feature_matching_loss(real, fake)) == pytest.approx((1.0 + 0.5) / 2, rel=1e-5)
    with pytest.raises(ValueError):
        losses.feature_matching_loss(real, fake[:1])


def test_silent_target_does_not_explode_the_relative_term():
    distance = losses.MultiScaleSTFT(log_weight=0.0)
    silence = torch.zeros(2, 1, 8192)
    quiet = 10 ** (-80 / 20) * torch.randn(2, 1, 8192)  # 20 dB below the -60 dB floor
    assert float(distance(silence, quiet)) == pytest.approx(0.1, rel=0.1)
    loud = 10 ** (-20 / 20) * torch.randn(2, 1, 8192)
    assert float(distance(silence, loud)) == pytest.approx(100.0, rel=0.1)


def test_log_term_ignores_differences_below_its_floor():
    distance = losses.MultiScaleSTFT(linear_weight=0.0)
    silence = torch.zeros(2, 1, 8192)
    inaudible = 10 ** (-120 / 20) * torch.randn(2, 1, 8192)  # 20 dB under the -100 dB floor
    audible = 10 ** (-40 / 20) * torch.randn(2, 1, 8192)
    assert float(distance(silence, inaudible)) < 0.1  # ~ ln(1 + 0.1): a tenth of the floor
    assert float(distance(silence, audible)) == pytest.approx(math.log(10 ** 3), rel=0.05)  # 60 dB above the floor


def test_excess_level_term_judges_a_frame_by_its_energy_not_by_its_bandwidth():
    # a steady tone at -64 dB RMS where the target is silent (a humming decoder): narrow in every
    # scale, so the log term, a mean over bins, barely sees it; the level term sees its 36 dB over
    # the -100 dB floor in every frame: ln(10^(36/20)) = 4.14 log-amplitude units
    t = torch.arange(32768) / 44100
    hum = (10 ** (-64 / 20) * math.sqrt(2) * torch.sin(2 * math.pi * 2756 * t))[None, None]
    silence = torch.zeros_like(hum)
    level_only = losses.MultiScaleSTFT(linear_weight=0.0, log_weight=0.0, level_weight=1.0)
    log_only = losses.MultiScaleSTFT(linear_weight=0.0)
    assert float(level_only(silence, hum)) == pytest.approx(36 / 20 * math.log(10), rel=0.02)
    assert float(log_only(silence, hum)) < 0.2
    # too loud by g: every frame's energy g^2 times the target's, |ln g|; too quiet, or right: nothing
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8192)
    assert float(level_only(x, 2.0 * x)) == pytest.approx(math.log(2.0), rel=1e-3)
    assert float(level_only(x, 0.5 * x)) == 0.0
    assert float(level_only(x, x)) == 0.0
    # the same energy per frame in other bins costs it (almost) nothing
    spectrum = torch.fft.rfft(x)
    shuffled = torch.fft.irfft(spectrum.abs().flip(-1) * torch.exp(1j * spectrum.angle()), n=8192)
    assert float(level_only(x, shuffled)) < 0.1 < float(log_only(x, shuffled))
    # and it adds to the other terms, weighted
    both = losses.MultiScaleSTFT(level_weight=2.0)(x, 2.0 * x)
    assert float(both) == pytest.approx(float(losses.MultiScaleSTFT()(x, 2.0 * x) + 2 * level_only(x, 2.0 * x)),
                                        rel=1e-5)


def test_expected_noise_power_judges_noise_by_its_spectrum_not_one_draw():
    """A noise target is matched best by the noise model that made it, judged by its expected
    power; judged by one draw, the same model scores like any other random signal."""
    from rave_ddsp.dsp import filtered_noise as dsp

    torch.manual_seed(0)
    frame_size, n_frames = 64, 32
    magnitudes = 0.1 * (1 + torch.rand(1, 1, n_frames, 5))  # [B, C, L, K]
    responses = dsp.impulse_response(magnitudes)
    target = dsp.filtered_noise(magnitudes, frame_size)  # [1, 1, T]
    draw = dsp.filtered_noise(magnitudes, frame_size)  # the same model, another draw
    distance = losses.MultiScaleSTFT((256, 64), log_weight=1.0, linear_weight=1.0)

    def expected(scale: float):
        def power(n_fft: int, hop: int) -> torch.Tensor:
            basis = dsp.noise_spectral_basis(n_fft, responses.shape[-1])
            return scale ** 2 * dsp.expected_stft_power(responses, frame_size, n_fft, hop, basis)[0]  # [1, F, T]
        return power

    silent = torch.zeros_like(target)
    judged_by_expectation = float(distance(target, silent, expected(1.0)))
    judged_by_a_draw = float(distance(target, draw))
    assert judged_by_expectation < 0.8 * judged_by_a_draw
    # and the expectation is best at the true level
    assert judged_by_expectation < float(distance(target, silent, expected(0.5)))
    assert judged_by_expectation < float(distance(target, silent, expected(2.0)))


@pytest.mark.parametrize("f0", [440.0, 110.0])
@pytest.mark.parametrize("noise_db", [-40.0, -60.0])
def test_noise_floor_is_found_between_the_partials(f0, noise_db):
    torch.manual_seed(0)
    t = torch.arange(44100) / 44100
    partials = sum(0.3 / k * torch.sin(2 * math.pi * f0 * k * t) for k in range(1, 30) if f0 * k < 20000)
    noise = 10 ** (noise_db / 20) * torch.randn(44100)
    distance = losses.NoiseFloorDistance(2048, 16)
    error_db = 10 * torch.log10(distance.floor((partials + noise)[None, None]) / distance.floor(noise[None, None]))
    assert abs(float(error_db.median())) < 2.0  # the partials are 35-55 dB louder


def test_noise_floor_distance_is_smallest_at_the_true_noise_level():
    torch.manual_seed(0)
    target = 0.05 * torch.randn(2, 1, 16384)
    distance = losses.NoiseFloorDistance(1024, 8)
    bin_power = float(distance.power(target.reshape(2, -1)).mean())

    def at(gain_db: float):
        return lambda n_fft, hop: torch.full((2, 513, 16384 // hop + 1), bin_power * 10 ** (gain_db / 10))

    scores = {gain: float(distance(target, at(gain))) for gain in (-3.0, 0.0, 3.0)}
    # the floor estimate's own spread (a quantile of 24 bins) keeps the minimum above 0
    assert scores[0.0] < 0.5 and scores[0.0] < 0.8 * min(scores[-3.0], scores[3.0])
