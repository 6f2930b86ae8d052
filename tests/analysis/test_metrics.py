"""Evaluation metrics against answers known in closed form or from the standards they follow."""
import math

import numpy as np
import pytest
import torch

from rave_ddsp.analysis import metrics
from rave_ddsp.errors import UserError
from rave_ddsp.train.losses import MultiScaleSTFT


def sine(frequency, sample_rate=16000, seconds=1.0, amplitude=0.5):
    """``[1, 1, T]`` sine wave."""
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * frequency * t)).float()[None, None]


@pytest.fixture
def noise():
    torch.manual_seed(0)
    return torch.randn(2, 1, 22050)  # [B, C, T], loud enough that no mel band nears the 1e-5 clamp


# --- distances on identical audio ------------------------------------------------------------

@pytest.mark.parametrize("distance", [
    pytest.param(lambda r, e: metrics.mel_distance(r, e, 44100), id="mel"),
    pytest.param(metrics.multiscale_stft_distance, id="multiscale_stft"),
    pytest.param(lambda r, e: metrics.loudness_l1(r, e, 44100), id="loudness_l1"),
])
def test_identical_audio_is_at_distance_zero(distance, noise):
    values = distance(noise, noise.clone())
    assert values.shape == (2,)
    assert torch.equal(values, torch.zeros(2))


def test_mismatched_shapes_are_refused(noise):
    with pytest.raises(ValueError, match=r"same shape"):
        metrics.mel_distance(noise, noise[..., :-1], 44100)
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        metrics.si_sdr(noise[0], noise[0])


# --- mel distance (DAC) ----------------------------------------------------------------------

@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_mel_distance_of_a_gain_is_log10_gain_per_scale(gain, noise):
    # mel(g x) = g mel(x), so each of the 7 summed scales contributes |log10 g| exactly
    expected = len(metrics.MEL_WINDOW_LENGTHS) * abs(math.log10(gain))
    assert metrics.mel_distance(noise, gain * noise, 44100) == pytest.approx([expected] * 2, rel=1e-3)


def test_mel_distance_grows_with_added_noise():
    torch.manual_seed(1)
    reference = sine(440, 44100, amplitude=0.5)
    disturbance = torch.randn_like(reference)
    values = [float(metrics.mel_distance(reference, reference + level * disturbance, 44100))
              for level in (1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_mel_distance_is_per_example(noise):
    alone = metrics.mel_distance(noise[:1], 0.5 * noise[:1], 44100)
    batched = metrics.mel_distance(noise, torch.cat([0.5 * noise[:1], noise[1:]]), 44100)
    assert batched[0] == pytest.approx(float(alone[0]), rel=1e-5) and batched[1] == 0


def slaney_mel_filters(sample_rate, n_fft, n_mels):
    """``[n_mels, F]`` triangles on the Slaney mel scale (linear to 1 kHz, then log), area-normalised."""
    def hz_to_mel(f):
        return np.where(f < 1000, f * 3 / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / np.log(6.4))

    def mel_to_hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    edges = mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))  # [n_mels + 2]
    bins = np.arange(n_fft // 2 + 1) * sample_rate / n_fft                     # [F]
    rising = (bins[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    falling = (edges[2:, None] - bins[None]) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0, np.minimum(rising, falling)) * (2 / (edges[2:] - edges[:-2]))[:, None]


def test_mel_distance_matches_dacs_recipe_written_in_numpy(noise):
    # DAC's MelSpectrogramLoss as audiotools computes it: centred reflect-padded STFT with a
    # periodic Hann, |X|, librosa's default (Slaney) mels, clamp 1e-5, log10, L1; scales summed
    reference, estimate = noise[0, 0].double().numpy(), (noise[0, 0] + 0.3 * noise[1, 0]).double().numpy()
    expected = 0.0
    for window, n_mels in zip(metrics.MEL_WINDOW_LENGTHS, metrics.MEL_N_MELS):
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
        filters = slaney_mel_filters(44100, window, n_mels)
        logs = []
        for x in (reference, estimate):
            padded = np.pad(x, window // 2, mode="reflect")
            frames = np.lib.stride_tricks.sliding_window_view(padded, window)[::window // 4]  # [frames, window]
            magnitude = np.abs(np.fft.rfft(frames * hann, axis=1)).T                        # [F, frames]
            logs.append(np.log10(np.maximum(filters @ magnitude, 1e-5)))
        expected += np.abs(logs[1] - logs[0]).mean()
    got = metrics.mel_distance(noise[:1], noise[:1] + 0.3 * noise[1:], 44100)
    assert float(got[0]) == pytest.approx(expected, rel=1e-4)


# --- multi-scale STFT distance ---------------------------------------------------------------

def test_multiscale_stft_distance_is_the_training_distance_per_example(noise):
    estimate = noise + 0.1 * torch.randn_like(noise)
    values = metrics.multiscale_stft_distance(noise, estimate)
    for i in range(2):
        assert values[i] == pytest.approx(float(MultiScaleSTFT()(noise[i:i + 1], estimate[i:i + 1])), rel=1e-6)


# --- SI-SDR ----------------------------------------------------------------------------------

@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_si_sdr_of_added_orthogonal_noise_is_the_snr(snr_db, noise):
    reference = noise[:1] - noise[:1].mean()
    disturbance = noise[1:] - noise[1:].mean()
    disturbance = disturbance - (disturbance * reference).sum() / (reference * reference).sum() * reference
    disturbance = disturbance * (reference.norm() / disturbance.norm()) * 10 ** (-snr_db / 20)
    assert float(metrics.si_sdr(reference, reference + disturbance)[0]) == pytest.approx(snr_db, abs=0.01)


def test_si_sdr_ignores_gain_and_offset_and_is_capped(noise):
    estimate = noise + 0.2 * torch.randn_like(noise)
    base = metrics.si_sdr(noise, estimate)
    assert torch.allclose(metrics.si_sdr(noise, 0.25 * estimate + 0.1), base, atol=1e-3)
    assert torch.allclose(metrics.si_sdr(4.0 * noise, estimate), base, atol=1e-3)
    assert torch.equal(metrics.si_sdr(noise, 0.5 * noise), torch.full((2,), metrics.SI_SDR_MAX_DB))


# --- loudness (DDSP) -------------------------------------------------------------------------

@pytest.mark.parametrize("band, expected_db", [  # IEC 61672-1 table 3, given to 0.1 dB
    (-15, -39.4), (-12, -26.2), (-10, -19.1), (-6, -8.6), (-3, -3.2),
    (0, 0.0), (3, 1.2), (6, 1.0), (9, -1.1), (12, -6.6),
])
def test_a_weighting_matches_the_standard_table(band, expected_db):
    frequency = 1000.0 * 10 ** (band / 10)  # the table's exact band centres (31.6 Hz for "31.5")
    assert float(metrics.a_weighting(torch.tensor([frequency]))) == pytest.approx(expected_db, abs=0.051)


def test_a_weighting_is_floored_at_dc():
    assert float(metrics.a_weighting(torch.tensor([0.0]))) == metrics.A_WEIGHTING_MIN_DB


@pytest.mark.parametrize("bin_index", [3, 32])  # 93.75 Hz and 1 kHz: centred on an FFT bin
def test_loudness_of_a_bin_centred_sine(bin_index):
    # periodic Hann, N = 512: |X| = a N / 4 in the sine's bin and a N / 8 in each neighbour
    amplitude, n_fft = 0.5, metrics.LOUDNESS_N_FFT
    frequency = bin_index * 16000 / n_fft
    neighbours = torch.tensor([bin_index - 1, bin_index, bin_index + 1]) * 16000 / n_fft  # [3] Hz
    weights = 10 ** (metrics.a_weighting(neighbours) / 10)  # A-weighting checked against IEC above
    power = (amplitude * n_fft / 4) ** 2 * float(weights[1] + (weights[0] + weights[2]) / 4)
    expected = 10 * math.log10(power / (n_fft // 2 + 1))
    frames = metrics.loudness(sine(frequency, amplitude=amplitude), 16000)[0, 0]  # [frames]
    assert frames.shape == (1 + 16000 // metrics.LOUDNESS_HOP,)
    assert frames[8:-8] == pytest.approx(torch.full_like(frames[8:-8], expected), abs=0.01)


def test_a_100_hz_tone_reads_about_19_db_below_a_1_khz_tone():
    low = metrics.loudness(sine(100.0), 16000)[0, 0, 8:-8].mean()
    high = metrics.loudness(sine(1000.0), 16000)[0, 0, 8:-8].mean()
    assert float(high - low) == pytest.approx(19.1, abs=0.5)  # A(1 kHz) - A(100 Hz), leakage aside


def test_loudness_resamples_to_16_khz():
    at_16k = metrics.loudness(sine(1000.0, 16000), 16000)[0, 0, 8:-8].mean()
    at_44k = metrics.loudness(sine(1000.0, 44100), 44100)[0, 0, 8:-8].mean()
    assert float(at_44k) == pytest.approx(float(at_16k), abs=0.05)


def test_loudness_floor_is_minus_80_db():
    assert torch.equal(metrics.loudness(torch.zeros(1, 2, 1600), 16000), torch.full((1, 2, 26), -80.0))


def test_loudness_l1_of_half_the_gain_is_6_02_db(noise):
    assert metrics.loudness_l1(noise, 0.5 * noise, 44100) == pytest.approx([20 * math.log10(2)] * 2, abs=1e-3)


# --- aggregation -----------------------------------------------------------------------------

def test_mean_and_ci95_student_t():
    result = metrics.mean_and_ci95([1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])
    # t(0.975, 4) = 2.7764451, s = sqrt(2.5), n = 5
    assert result.n == 5 and result.mean == pytest.approx(3.0)
    assert result.half_width == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    single = metrics.mean_and_ci95(torch.tensor([2.0]))
    assert single.mean == 2.0 and math.isnan(single.half_width)
    assert metrics.mean_and_ci95([]).n == 0


def test_evaluate_pair_without_pitch(noise):
    scores = metrics.evaluate_pair(noise[0], 0.5 * noise[0], 44100)
    assert set(scores) == {"mel_distance", "multiscale_stft", "si_sdr_db", "loudness_l1_db"}
    assert scores["loudness_l1_db"] == pytest.approx(6.0206, abs=1e-3)
    assert scores["si_sdr_db"] == metrics.SI_SDR_MAX_DB


# --- pitch (CREPE) ---------------------------------------------------------------------------

def test_crepe_decoding_is_the_local_weighted_mean():
    activations = torch.zeros(2, 360)
    activations[0, 100] = 0.9                                     # one bin: its centre
    activations[1, 199], activations[1, 200], activations[1, 201] = 0.2, 0.8, 0.6
    activations[1, 204] = 0.4                                     # the edge of the 9 bins: counted
    activations[1, 205] = activations[1, 250] = 0.3               # outside them: ignored
    cents, confidence = metrics._decode_crepe(activations)
    centre = metrics.CREPE_BIN0_CENTS + metrics.CREPE_CENTS_PER_BIN * torch.tensor([100.0, 200.0])
    shift = metrics.CREPE_CENTS_PER_BIN * (-0.2 + 0.6 + 4 * 0.4) / (0.2 + 0.8 + 0.6 + 0.4)
    assert cents == pytest.approx(centre + torch.tensor([0.0, shift]), abs=1e-3)
    assert confidence == pytest.approx(torch.tensor([0.9, 0.8]))


def test_pitch_without_torchcrepe_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torchcrepe", None)  # import now fails
    with pytest.raises(UserError, match=r"rave_ddsp\[pitch\]"):
        metrics.f0(sine(440.0), 16000)


@pytest.fixture(scope="module")
def f0_scores():
    """Reference: four 440 Hz sines; estimates: the same, +50 cents, two octaves up, white noise."""
    pytest.importorskip("torchcrepe", reason="pitch metrics need the extra: pip install 'rave_ddsp[pitch]'")
    reference = torch.cat([sine(440.0)] * 4)
    generator = torch.Generator().manual_seed(0)
    estimate = torch.cat([sine(440.0), sine(440.0 * 2 ** (50 / 1200)), sine(1760.0),
                          0.3 * torch.randn(1, 1, 16000, generator=generator)])
    return metrics.f0_metrics(reference, estimate, 16000, model="tiny")


def test_f0_of_a_sine(f0_scores):
    hz, confidence = metrics.f0(sine(440.0, 22050), 22050, model="tiny")  # also resamples
    assert hz.shape == confidence.shape == (1, 1 + 16000 // metrics.CREPE_HOP)
    cents_off = 1200 * torch.log2(hz[0, 5:-5] / 440.0)
    assert cents_off.abs().max() < 10 and confidence[0, 5:-5].min() > 0.85


def test_f0_errors_in_cents(f0_scores):
    assert f0_scores.voiced_frames.min() > 80  # of 101 frames, the reference is confident
    assert float(f0_scores.l1_cents[0]) == 0.0
    assert float(f0_scores.l1_cents[1]) == pytest.approx(50.0, abs=5.0)
    assert float(f0_scores.rmse_cents[1]) == pytest.approx(50.0, abs=5.0)
    assert float(f0_scores.l1_cents[2]) == pytest.approx(2400.0, abs=20.0)


def test_f0_outliers(f0_scores):
    assert f0_scores.outlier.tolist() == [False, False, True, True]  # noise: CREPE's guesses, over an octave off
    assert f0_scores.outlier_ratio == pytest.approx(2 / 4)


def test_f0_pitched_tells_a_wrong_pitch_from_no_pitch(f0_scores):
    assert f0_scores.pitched[:3].min() > 0.95  # wrong or right, the sines are pitched
    assert float(f0_scores.pitched[3]) < 0.05  # the noise is not: its cents errors are not a pitch error


def test_f0_pitched_counts_the_scored_frames_only():
    f0 = torch.full((2, 4), 440.0)
    reference_confidence = torch.tensor([[0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.1]])
    estimate_confidence = torch.tensor([[0.9, 0.5, 0.85, 0.9], [0.9, 0.9, 0.9, 0.9]])
    scores = metrics.f0_scores(f0, reference_confidence, f0, 0.85, estimate_confidence)
    assert float(scores.pitched[0]) == pytest.approx(2 / 3)  # the 4th frame is not scored
    assert math.isnan(float(scores.pitched[1]))               # nothing scored
    assert torch.isnan(metrics.f0_scores(f0, reference_confidence, f0).pitched).all()  # not asked
