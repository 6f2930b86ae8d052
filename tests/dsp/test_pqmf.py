"""Tests for rave_ddsp.dsp.pqmf: design primitives against numpy references, reconstruction,
alignment, streaming, TorchScript."""
import numpy as np
import pytest
import torch

from rave_ddsp.dsp.pqmf import (
    PQMF,
    cosine_modulate,
    design_prototype,
    nyquist_residuals,
    peak_stopband_db,
    reconstruction_snr,
)

BAND_COUNTS = [2, 4, 8, 16, 32]
SAMPLE_RATE = 44100
N_SAMPLES = 1 << 15
# Round-trip SNR floors (float32, default 100 dB design, edges cropped by n_taps samples):
# the lowest of white noise and music_like over seeds 0-2 was 116.8, 118.4, 117.9, 116.8,
# 115.7 dB for M = 2, 4, 8, 16, 32; minus 3 dB, rounded down. (Prediction: 117.7-119.2 dB;
# the 377-tap Kaiser reference design reaches only 60 dB.)
SNR_FLOOR_DB = {2: 113.0, 4: 115.0, 8: 114.0, 16: 113.0, 32: 112.0}
# |H(w)|^2 + |H(pi/M - w)|^2 = 1 holds to 2.1e-6 and |2M g[2Mk]| <= 5.1e-7 (measured).
POWER_COMPLEMENTARITY_TOLERANCE = 1e-5
NYQUIST_TOLERANCE = 2e-6
ANY_TWO_COMPONENTS_DB = 20 * np.log10(2)  # a band filter is the sum of two shifted prototypes


def band_ids(n_bands):
    return f"M={n_bands}"


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


def music_like(n_samples: int, seed: int) -> np.ndarray:
    """``[T]``: six decaying harmonic notes (pitches 55-880 Hz) plus -60 dB white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SAMPLE_RATE
    signal = np.zeros(n_samples)
    for onset in np.linspace(0, t[-1], 6, endpoint=False):
        f0 = 55 * 2 ** (rng.integers(0, 48) / 12)
        since = np.clip(t - onset, 0, None)
        envelope = np.where(t >= onset, np.exp(-3 * since) * (1 - np.exp(-200 * since)), 0)
        for harmonic in range(1, 20):
            if harmonic * f0 < SAMPLE_RATE / 2:
                signal += envelope * np.sin(2 * np.pi * harmonic * f0 * t + rng.uniform(0, 2 * np.pi)) / harmonic
    return 0.5 * signal / np.abs(signal).max() + 1e-3 * rng.standard_normal(n_samples)


def as_tensor(x: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype).reshape(1, 1, -1)  # [1, 1, T]


# --- prototype design -------------------------------------------------------------------


@pytest.mark.parametrize("n_bands", BAND_COUNTS, ids=band_ids)
def test_prototype_meets_its_design(n_bands):
    prototype = design_prototype(n_bands)
    assert len(prototype) == 2 * 10 * n_bands - 1  # K = 10 for 100 dB, see module docstring
    np.testing.assert_allclose(prototype, prototype[::-1], atol=1e-15)  # linear phase
    assert prototype.sum() == pytest.approx(1.0, abs=1e-12)
    assert peak_stopband_db(prototype, n_bands) <= -100.0
    assert np.abs(nyquist_residuals(prototype, n_bands)).max() < NYQUIST_TOLERANCE


@pytest.mark.parametrize("attenuation", [60.0, 120.0], ids=lambda a: f"att={a:g}")
def test_attenuation_sets_stopband_and_snr(attenuation):
    prototype = design_prototype(8, attenuation)
    assert peak_stopband_db(prototype, 8) <= -attenuation
    assert reconstruction_snr(prototype, 8) >= attenuation


@pytest.mark.parametrize("n_bands", [2, 16], ids=band_ids)
def test_power_complementarity(n_bands):
    prototype = design_prototype(n_bands)
    response = np.abs(np.fft.rfft(prototype, 1 << 16))
    frequency = np.linspace(0, np.pi, len(response))
    passband = frequency <= np.pi / n_bands
    mirrored = np.interp(np.pi / n_bands - frequency[passband], frequency, response)
    total = response[passband] ** 2 + mirrored**2
    np.testing.assert_allclose(total, 1.0, atol=POWER_COMPLEMENTARITY_TOLERANCE)


@pytest.mark.parametrize("n_bands", [4, 16], ids=band_ids)
def test_band_filters_pass_their_band_and_reject_the_rest(n_bands):
    analysis, synthesis = cosine_modulate(design_prototype(n_bands), n_bands)
    n_fft = 1 << 15
    frequency = np.linspace(0, np.pi, n_fft // 2 + 1)
    for filters in (analysis, synthesis):
        responses = np.abs(np.fft.rfft(filters, n_fft, axis=-1))  # [M, F]
        for band, response in enumerate(responses):
            centre = (2 * band + 1) * np.pi / (2 * n_bands)
            assert response[np.argmin(np.abs(frequency - centre))] == pytest.approx(1.0, abs=1e-3)
            far = np.abs(frequency - centre) >= np.pi / n_bands
            assert 20 * np.log10(response[far].max()) <= -100.0 + ANY_TWO_COMPONENTS_DB


def test_predicted_snr_matches_measured_white_noise():
    n_bands = 8
    pqmf = PQMF(n_bands).double()
    x = np.random.default_rng(0).standard_normal(N_SAMPLES)
    y = pqmf.inverse(pqmf(as_tensor(x)))[0, 0].numpy()
    crop = pqmf.n_taps
    measured = snr_db(x[crop:-crop], y[crop:-crop])
    assert measured == pytest.approx(reconstruction_snr(design_prototype(n_bands), n_bands), abs=0.3)


def test_reconstruction_snr_of_a_plain_lowpass_is_poor():
    """A prototype that ignores power complementarity (cutoff pi/(4M)) must score low."""
    n_bands, n_taps = 4, 79
    n = np.arange(n_taps) - (n_taps - 1) / 2
    prototype = np.sinc(n / (4 * n_bands)) * np.kaiser(n_taps, 10.0)
    assert reconstruction_snr(prototype / prototype.sum(), n_bands) < 10.0


# --- polyphase implementation against direct convolution --------------------------------


def as_stored(filters):
    """The filters rounded to float32 like the module's buffers (then computed in float64)."""
    return tuple(f.astype(np.float32).astype(np.float64) for f in filters)


@pytest.mark.parametrize("n_bands", [2, 16], ids=band_ids)
def test_analysis_equals_filtering_then_decimation(n_bands):
    pqmf = PQMF(n_bands).double()
    analysis, _ = as_stored(cosine_modulate(design_prototype(n_bands), n_bands))
    centre = (pqmf.n_taps - 1) // 2
    x = np.random.default_rng(1).standard_normal(64 * n_bands)
    bands = pqmf(as_tensor(x))[0].numpy()  # [M, T/M]
    expected = np.stack([np.convolve(x, f)[centre::n_bands][: len(x) // n_bands] for f in analysis])
    np.testing.assert_allclose(bands, expected, atol=1e-12)


@pytest.mark.parametrize("n_bands", [2, 16], ids=band_ids)
def test_synthesis_equals_upsampling_then_filtering(n_bands):
    pqmf = PQMF(n_bands).double()
    _, synthesis = as_stored(cosine_modulate(design_prototype(n_bands), n_bands))
    centre = (pqmf.n_taps - 1) // 2
    frames = 64
    bands = np.random.default_rng(2).standard_normal((n_bands, frames))
    expected = np.zeros(frames * n_bands)
    for band, f in zip(bands, synthesis):
        upsampled = np.zeros(frames * n_bands)
        upsampled[::n_bands] = band
        expected += n_bands * np.convolve(upsampled, f)[centre:centre + frames * n_bands]
    y = pqmf.inverse(torch.tensor(bands)[None])[0, 0].numpy()
    np.testing.assert_allclose(y, expected, atol=1e-12)


# --- reconstruction and alignment (float32, as shipped) -----------------------------------


@pytest.mark.parametrize("signal", ["white", "music"])
@pytest.mark.parametrize("n_bands", BAND_COUNTS, ids=band_ids)
def test_round_trip_snr(n_bands, signal):
    pqmf = PQMF(n_bands)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(N_SAMPLES) if signal == "white" else music_like(N_SAMPLES, seed)
        y = pqmf.inverse(pqmf(as_tensor(x, torch.float32)))[0, 0].double().numpy()
        crop = pqmf.n_taps  # zero padding disturbs only the outer n_taps samples
        assert snr_db(x[crop:-crop], y[crop:-crop]) >= SNR_FLOOR_DB[n_bands]


@pytest.mark.parametrize("n_bands", [4, 16], ids=band_ids)
def test_offline_bands_are_centred_on_their_samples(n_bands):
    pqmf = PQMF(n_bands).double()
    frame = 100
    x = np.zeros(200 * n_bands)
    x[frame * n_bands] = 1.0
    bands = pqmf(as_tensor(x))[0].abs().numpy()  # [M, T/M]
    assert np.all(bands.argmax(axis=1) == frame)
    # |h_m[jM + c]| = sqrt(2) |h[jM + c]|: every band's envelope is symmetric about the frame
    np.testing.assert_allclose(bands[:, frame - 30:frame], bands[:, frame + 30:frame:-1], atol=1e-12)
    y = pqmf.inverse(pqmf(as_tensor(x)))[0, 0].numpy()
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_multichannel_is_channel_major_and_independent():
    n_bands = 8
    pqmf = PQMF(n_bands)
    x = torch.randn(2, 3, 128 * n_bands)
    bands = pqmf(x)
    assert bands.shape == (2, 3 * n_bands, 128)
    for channel in range(3):
        alone = pqmf(x[:, channel:channel + 1])
        torch.testing.assert_close(bands[:, channel * n_bands:(channel + 1) * n_bands], alone)
        torch.testing.assert_close(pqmf.inverse(alone), pqmf.inverse(bands)[:, channel:channel + 1])


def test_one_band_is_the_identity():
    for streaming in (False, True):
        pqmf = PQMF(1, streaming=streaming)
        x = torch.randn(2, 2, 100)
        assert pqmf.delay == pqmf.analysis_delay == pqmf.synthesis_delay == 0
        torch.testing.assert_close(pqmf(x), x, rtol=0, atol=0)
        torch.testing.assert_close(pqmf.inverse(x), x, rtol=0, atol=0)


def test_a_given_length_gets_the_best_reconstruction_its_stopband_allows():
    """The lower-delay bank of configs/live.yaml: 159 taps for 16 bands, stopband at least 65 dB; every
    fit that meets the stopband reconstructs worse than the one chosen, and the measured round trip follows."""
    from rave_ddsp.dsp.pqmf import _fit_slepian

    prototype = design_prototype(16, 65.0, 159)
    chosen = reconstruction_snr(prototype, 16)
    assert len(prototype) == 159 and peak_stopband_db(prototype, 16) <= -65.0
    assert chosen > 66.0  # 62.1 dB for the automatic rule's fit (3 sequences) at a 60 dB stopband
    for n_slepians in range(1, 5):
        fit = _fit_slepian(16, 159, n_slepians, 65.0)
        if peak_stopband_db(fit, 16) <= -65.0:
            assert reconstruction_snr(fit, 16) <= chosen + 1e-9
    pqmf = PQMF(16, 65.0, n_taps=159).double()
    x = as_tensor(np.random.default_rng(0).standard_normal(N_SAMPLES))
    with torch.no_grad():
        y = pqmf.inverse(pqmf(x))
    crop = pqmf.n_taps
    measured = snr_db(x[..., crop:-crop].numpy(), y[..., crop:-crop].numpy())
    assert abs(measured - chosen) < 1.5
    assert (pqmf.analysis_delay, pqmf.synthesis_delay) == (64, 80)


# --- errors ---------------------------------------------------------------------------------


def test_length_not_a_multiple_of_bands_is_rejected():
    with pytest.raises(ValueError, match=r"T=1000 .* M=16"):
        PQMF(16)(torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match=r"17 channels.* M=16"):
        PQMF(16).inverse(torch.zeros(1, 17, 10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_bands=0), "n_bands=0"),
        (dict(attenuation=-3.0), "attenuation=-3.0"),
        (dict(n_bands=4, n_taps=80), "n_taps=80"),
        (dict(n_bands=4, n_taps=31, attenuation=100.0), "31-tap"),
    ],
    ids=["no-bands", "negative-attenuation", "even-taps", "too-few-taps"],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PQMF(**kwargs)


# --- streaming ------------------------------------------------------------------------------


def stream(call, x: torch.Tensor, chunk_frames, n_bands: int) -> torch.Tensor:
    """Feed ``x [B, C, T]`` in chunks of the given frame counts (cycled), concatenate."""
    outputs, start, index = [], 0, 0
    while start < x.shape[-1]:
        size = chunk_frames[index % len(chunk_frames)] * n_bands
        outputs.append(call(x[..., start:start + size]))
        start, index = start + size, index + 1
    return torch.cat(outputs, -1)


def assert_delayed(streamed: torch.Tensor, offline: torch.Tensor, shift: int, atol: float) -> None:
    """``streamed[..., t] == offline[..., t - shift]`` wherever ``t >= shift``.

    The first ``shift`` steps are the streaming pre-roll (offline output before time 0).
    """
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed[..., shift:], offline[..., : offline.shape[-1] - shift], rtol=0, atol=atol)


@pytest.mark.parametrize(
    "n_bands, n_taps", [(4, 0), (16, 0), (4, 77), (8, 161)], ids=["M=4", "M=16", "M=4-N=77", "M=8-N=161"])
def test_streaming_is_delayed_offline(n_bands, n_taps):
    offline = PQMF(n_bands, n_taps=n_taps).double()
    encoder = PQMF(n_bands, streaming=True, n_taps=n_taps).double()
    decoder = PQMF(n_bands, streaming=True, n_taps=n_taps).double()  # decode-only cache
    assert offline.analysis_delay % n_bands == 0 and offline.synthesis_delay % n_bands == 0
    assert offline.delay == offline.analysis_delay + offline.synthesis_delay
    x = torch.randn(3, 2, 256 * n_bands, dtype=torch.float64)
    bands = offline(x)

    streamed = stream(encoder, x, [1, 3, 64, 5], n_bands)
    assert_delayed(streamed, bands, offline.analysis_delay // n_bands, atol=1e-12)
    synthesized = stream(decoder.inverse, bands, [7, 1, 32], 1)
    assert_delayed(synthesized, offline.inverse(bands), offline.synthesis_delay, atol=1e-12)


@pytest.mark.parametrize("n_bands", [2, 16], ids=band_ids)
def test_streaming_round_trip_is_a_pure_delay(n_bands):
    pqmf = PQMF(n_bands, streaming=True)
    x = music_like(N_SAMPLES, 0)
    y = stream(lambda chunk: pqmf.inverse(pqmf(chunk)), as_tensor(x, torch.float32), [128], n_bands)
    y = y[0, 0].double().numpy()
    delay, crop = pqmf.delay, pqmf.delay + pqmf.n_taps
    assert snr_db(x[crop - delay:-crop - delay], y[crop:-crop]) >= SNR_FLOOR_DB[n_bands]


def test_streaming_chunks_equal_one_call_in_float32():
    n_bands = 16
    whole, chunked = PQMF(n_bands, streaming=True), PQMF(n_bands, streaming=True)
    x = torch.randn(2, 1, 200 * n_bands)
    expected = whole.inverse(whole(x))
    torch.testing.assert_close(stream(lambda c: chunked.inverse(chunked(c)), x, [2, 128, 1], n_bands), expected,
                               rtol=0, atol=1e-5)


def test_streaming_cache_holds_64_voices_with_channels_and_strided_input():
    n_bands, channels = 16, 2
    pqmf = PQMF(n_bands, streaming=True)
    reference = PQMF(n_bands, streaming=True)
    strided = torch.randn(64, 128 * n_bands, channels).transpose(1, 2)  # [64, C, T], not contiguous
    bands = pqmf(strided)
    torch.testing.assert_close(bands, reference(strided.contiguous()), rtol=0, atol=0)
    assert pqmf.analysis_pad.pad.shape[:2] == (64, channels * n_bands)
    strided_bands = bands[:3, :, ::2]  # [3, C*M, 64], not contiguous; 3 voices
    y = pqmf.inverse(strided_bands)
    torch.testing.assert_close(y, reference.inverse(strided_bands.contiguous()), rtol=0, atol=0)
    assert y.shape == (3, channels, 64 * n_bands)
    assert pqmf.synthesis_pad.pad.shape[:2] == (64, channels * n_bands)


# --- TorchScript ------------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_scripted_equals_eager(streaming, tmp_path):
    n_bands, channels = 16, 2
    eager, shipped = PQMF(n_bands, streaming=streaming), PQMF(n_bands, streaming=streaming)
    warm_up = torch.zeros(1, channels, 4 * n_bands)  # creates the streaming caches (zeros)
    for model in (eager, shipped):
        model.inverse(model(warm_up))
    path = tmp_path / "pqmf.ts"
    torch.jit.script(shipped).save(str(path))
    scripted = torch.jit.load(str(path))
    x = torch.randn(2, channels, 64 * n_bands)
    for chunk in x.split(16 * n_bands, dim=-1):
        bands = eager(chunk)
        torch.testing.assert_close(scripted(chunk), bands, rtol=0, atol=0)
        torch.testing.assert_close(scripted.inverse(bands), eager.inverse(bands), rtol=0, atol=0)
    with pytest.raises(Exception, match=r"T=100 .* M=16"):
        scripted(torch.zeros(1, channels, 100))
