"""The filtered-noise DSP against numpy references and the spectral criteria of the design."""
import numpy as np
import pytest
import scipy.signal
import torch

from rave_ddsp.dsp import filtered_noise as dsp

UNIFORM_VARIANCE = 1.0 / 3.0  # variance of uniform noise on [-1, 1)


def smooth_request(n_frequencies: int) -> torch.Tensor:
    """A smooth magnitude curve with two ~35 dB valleys and a tilt: ``[K]`` float64."""
    f = np.linspace(0, 1, n_frequencies)
    db = -35 * np.sin(2.5 * np.pi * f) ** 2 - 10 * f
    return torch.tensor(10 ** (db / 20), dtype=torch.float64)


def truncated_wrapped_noise(magnitudes: torch.Tensor, frame_size: int, noise: torch.Tensor) -> torch.Tensor:
    """The flawed scheme the design replaces (RAVE / ddsp_pytorch, from their description):
    zero-phase response wrapped to the frame start, each frame's convolution truncated to the
    frame, no overlap-add. ``[L, K]``, ``[L * S]`` -> ``[L * S]``."""
    n = dsp.ir_length(magnitudes.shape[-1])
    wrapped = torch.roll(dsp.impulse_response(magnitudes), -(n // 2), -1)
    wrapped = torch.nn.functional.pad(wrapped, [0, max(0, frame_size - n)])
    frames = noise.reshape(-1, frame_size)
    spectrum = torch.fft.rfft(frames, 2 * frame_size) * torch.fft.rfft(wrapped, 2 * frame_size)
    return torch.fft.irfft(spectrum, 2 * frame_size)[..., :frame_size].reshape(-1)


def psd_error_db(signal: np.ndarray, magnitudes: torch.Tensor, nperseg: int = 256) -> float:
    """Largest |realised PSD - expected PSD| in dB where the request is within 40 dB of its max.

    Expected: ``2 * var * |H(f)|^2`` (one-sided density at fs = 1), H the windowed response.
    """
    freqs, psd = scipy.signal.welch(signal, fs=1.0, nperseg=nperseg, detrend=False)
    response = np.abs(np.fft.rfft(dsp.impulse_response(magnitudes).numpy(), nperseg)) ** 2
    expected = 2 * UNIFORM_VARIANCE * response
    request = np.interp(freqs, np.linspace(0, 0.5, magnitudes.shape[-1]), magnitudes.numpy())
    considered = 20 * np.log10(request) > 20 * np.log10(request.max()) - 40
    considered[[0, -1]] = False  # DC and Nyquist bins are scaled differently by Welch
    return float(np.abs(10 * np.log10(psd / expected))[considered].max())


def frame_modulation_db(signal: np.ndarray, frame_size: int) -> float:
    """Spread (max/min, dB) of the mean power at each position inside a frame."""
    power = (signal.reshape(-1, frame_size) ** 2).mean(0)
    return float(10 * np.log10(power.max() / power.min()))


def test_exp_sigmoid_constants():
    x = torch.tensor([-100.0, 0.0, 5.0, 100.0])
    y = dsp.exp_sigmoid(x)
    assert y[0] == pytest.approx(1e-7, rel=1e-3)  # floor
    assert y[1] == pytest.approx(2 * (1 / (1 + np.exp(5))) ** 2.3 + 1e-7, rel=1e-5)  # nearly silent start
    assert 20 * np.log10(float(y[1])) < -90
    assert y[2] == pytest.approx(2 * 0.5 ** 2.3 + 1e-7, rel=1e-6)
    assert y[3] == pytest.approx(2.0, rel=1e-6)  # ceiling


def test_exp_sigmoid_is_log10_amplitude_below_saturation():
    # one unit of input is ~20 dB of output below the offset (sigmoid(x) ~ exp(x) there)
    a, b = dsp.exp_sigmoid(torch.tensor([-1.0, 0.0], dtype=torch.float64)) - dsp.SCALE_FLOOR
    assert 20 * np.log10(float(b / a)) == pytest.approx(20.0, abs=0.3)


@pytest.mark.parametrize("n_frequencies", [2, 5, 65])
def test_impulse_response_matches_numpy(n_frequencies):
    magnitudes = torch.rand(3, n_frequencies, dtype=torch.float64)
    n = 2 * (n_frequencies - 1)
    reference = np.fft.irfft(magnitudes.numpy(), n)
    reference = np.roll(reference, n // 2, axis=-1) * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n))
    np.testing.assert_allclose(dsp.impulse_response(magnitudes).numpy(), reference, atol=1e-12)


def test_flat_magnitudes_give_a_centred_unit_impulse():
    ir = dsp.impulse_response(torch.ones(33, dtype=torch.float64))
    expected = torch.zeros(64, dtype=torch.float64)
    expected[dsp.filter_delay(33)] = 1.0
    torch.testing.assert_close(ir, expected)


def test_impulse_response_is_symmetric_about_its_centre():
    ir = dsp.impulse_response(torch.rand(17, dtype=torch.float64))
    n = ir.shape[-1]
    torch.testing.assert_close(ir[1:], ir[1:].flip(-1))  # ir[n/2 + k] == ir[n/2 - k]
    assert ir[0] == 0 and n == 32


def test_impulse_response_rejects_one_magnitude():
    with pytest.raises(ValueError, match="at least 2"):
        dsp.impulse_response(torch.ones(4, 1))


@pytest.mark.parametrize("frame_size,n_frequencies", [(16, 5), (16, 9), (16, 33), (7, 65)],
                         ids=["ir<frame", "ir=frame", "ir=4frames", "ir>>frame"])
def test_frame_convolve_matches_numpy_overlap_add(frame_size, n_frequencies):
    n_frames = 6
    frames = torch.randn(2, n_frames, frame_size, dtype=torch.float64)
    irs = torch.randn(2, n_frames, dsp.ir_length(n_frequencies), dtype=torch.float64)
    out, tail = dsp.frame_convolve(frames, irs)
    n = irs.shape[-1]
    reference = np.zeros((2, n_frames * frame_size + n - 1))
    for b in range(2):
        for l in range(n_frames):
            start = l * frame_size
            reference[b, start:start + frame_size + n - 1] += np.convolve(frames[b, l].numpy(), irs[b, l].numpy())
    np.testing.assert_allclose(out.numpy(), reference[:, :n_frames * frame_size], atol=1e-10)
    np.testing.assert_allclose(tail.numpy(), reference[:, n_frames * frame_size:], atol=1e-10)


@pytest.mark.parametrize("n_frequencies,frame_size", [(5, 64), (65, 64), (33, 256)],
                         ids=["K5-S64", "K65-S64", "K33-S256"])
def test_realised_spectrum_matches_the_windowed_response(n_frequencies, frame_size):
    torch.manual_seed(0)
    n_frames = 2 ** 20 // frame_size  # long enough for ~0.3 dB estimation noise
    magnitudes = smooth_request(n_frequencies)
    noise = torch.rand(n_frames * frame_size, dtype=torch.float64) * 2 - 1
    ours = dsp.filtered_noise(magnitudes.expand(n_frames, -1), frame_size, noise).numpy()
    assert psd_error_db(ours, magnitudes) < 1.0
    assert frame_modulation_db(ours, frame_size) < 1.0
    # The same measurement catches the truncated, wrapped scheme: the test can fail.
    flawed = truncated_wrapped_noise(magnitudes.expand(n_frames, -1), frame_size, noise).numpy()
    assert psd_error_db(flawed, magnitudes) > 3.0
    assert frame_modulation_db(flawed, frame_size) > 1.0


def test_default_noise_is_uniform_white():
    torch.manual_seed(0)
    out = dsp.filtered_noise(torch.ones(1000, 9), 32)  # flat response: the noise itself, delayed
    assert out.shape == (32000,)
    assert float(out.abs().max()) <= 1.0
    assert float(out[64:].var()) == pytest.approx(UNIFORM_VARIANCE, rel=0.03)


def test_filtered_noise_shapes_and_gradient():
    magnitudes = torch.rand(2, 3, 10, 5, requires_grad=True)
    out = dsp.filtered_noise(magnitudes, 8)
    assert out.shape == (2, 3, 80)
    out.pow(2).sum().backward()
    assert magnitudes.grad is not None and torch.isfinite(magnitudes.grad).all()
    assert magnitudes.grad.abs().sum() > 0


def test_scripted_matches_eager():
    scripted = torch.jit.script(dsp.filtered_noise)
    magnitudes = torch.rand(2, 4, 12, 9)
    noise = torch.rand(2, 4, 12 * 16) * 2 - 1
    torch.testing.assert_close(scripted(magnitudes, 16, noise), dsp.filtered_noise(magnitudes, 16, noise))


def test_chunked_frames_with_carried_tails_equal_one_call():
    magnitudes = torch.rand(3, 20, 33, dtype=torch.float64)
    frames = torch.randn(3, 20, 16, dtype=torch.float64)  # IR (64) spans 4 frames
    irs = dsp.impulse_response(magnitudes)
    whole, _ = dsp.frame_convolve(frames, irs)
    pieces, carried = [], torch.zeros(3, irs.shape[-1] - 1, dtype=torch.float64)
    for start, stop in [(0, 1), (1, 7), (7, 8), (8, 20)]:
        out, tail = dsp.frame_convolve(frames[:, start:stop], irs[:, start:stop])
        out, carried = dsp.carry_tail(out, tail, carried)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, -1), whole)


# ------------------------------------------------------------- expected spectrum --
def noise_draws(magnitudes: torch.Tensor, frame_size: int, draws: int) -> torch.Tensor:
    """``[draws, ..., L * frame_size]`` filtered noise, one draw of white noise each."""
    torch.manual_seed(1)
    noise = torch.rand(draws, *magnitudes.shape[:-2], magnitudes.shape[-2] * frame_size) * 2 - 1
    return dsp.filtered_noise(magnitudes.expand(draws, *magnitudes.shape), frame_size, noise)


def average_stft_power(signals: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``[draws, ..., T] -> [..., F, frames]``: STFT power averaged over the draws (torchaudio's framing)."""
    flat = signals.reshape(-1, signals.shape[-1])
    power = torch.stft(flat, n_fft, n_fft // 4, window=torch.hann_window(n_fft), center=True,
                       return_complex=True).abs().pow(2)
    return power.reshape(*signals.shape[:-1], *power.shape[-2:]).mean(0)


def changing_magnitudes(bands: int, frames: int, n_frequencies: int = 5) -> torch.Tensor:
    """``[bands, frames, K]`` magnitudes that differ across bands, frames and frequencies (20 dB range)."""
    generator = torch.Generator().manual_seed(0)
    return 10 ** (-torch.rand(bands, frames, n_frequencies, generator=generator))


@pytest.mark.parametrize("n_fft", [128, 64, 32])
def test_expected_band_stft_power_is_the_average_over_noise_draws(n_fft):
    frame_size, magnitudes = 64, changing_magnitudes(4, 16)
    drawn = average_stft_power(noise_draws(magnitudes, frame_size, 300), n_fft)  # [M, F, frames]
    basis = dsp.noise_spectral_basis(n_fft, dsp.ir_length(5))
    expected = dsp.expected_stft_power(dsp.impulse_response(magnitudes), frame_size, n_fft, n_fft // 4, basis)
    error_db = 10 * torch.log10(drawn / expected)[..., 4:-4]  # the first and last frames see the ramps
    # 300 draws: an average of exponential variables, ~6 % (0.25 dB) estimation noise per bin
    assert abs(float(error_db.mean())) < 0.1
    assert float(error_db.abs().mean()) < 0.4


@pytest.mark.parametrize("n_fft", [2048, 512, 128])
def test_expected_full_band_stft_power_is_the_average_over_noise_draws(n_fft):
    from rave_ddsp.dsp.pqmf import PQMF

    pqmf, frame_size, n_taps = PQMF(16, 100.0), 64, dsp.ir_length(5)
    magnitudes = changing_magnitudes(16, 8)
    audio = pqmf.inverse(noise_draws(magnitudes, frame_size, 200))[:, 0]  # [draws, T]
    drawn = average_stft_power(audio, n_fft)
    gains = pqmf.synthesis_power_responses(dsp.density_grid(n_fft, pqmf.n_taps + 16 * n_taps))
    basis = dsp.noise_spectral_basis(n_fft, n_taps, gains)
    expected = dsp.expected_stft_power(dsp.impulse_response(magnitudes), frame_size, n_fft, n_fft // 4, basis)
    error_db = 10 * torch.log10(drawn / expected)[..., 4:-4]  # the first and last frames see the ramps
    # band edges included: without the window's smoothing, n_fft 128 is off by 2 dB on average
    assert abs(float(error_db.mean())) < 0.15
    assert float(error_db.abs().mean()) < 0.45


def test_inverse_exp_sigmoid_inverts_the_scaling():
    for magnitude in (1e-5, 3e-3, 0.5, 1.9):
        assert float(dsp.exp_sigmoid(torch.tensor(dsp.inverse_exp_sigmoid(magnitude)))) == pytest.approx(magnitude)
    with pytest.raises(ValueError, match="noise magnitude"):
        dsp.inverse_exp_sigmoid(2.5)


def test_expected_power_stays_positive_over_a_70_db_range_of_magnitudes():
    """Magnitudes from the scaling's floor (1e-7) to near its ceiling: float32 cancellation used to leave
    bins far under the peak negative (-1.6e-6 against 53), and a training loss's square root of them NaN."""
    torch.manual_seed(0)
    responses = dsp.impulse_response(10 ** (-7 + 7.3 * torch.rand(4, 16, 32, 5)))
    for n_fft in (128, 64):
        power = dsp.expected_stft_power(responses, 64, n_fft, n_fft // 4,
                                        dsp.noise_spectral_basis(n_fft, responses.shape[-1]))
        assert float(power.min()) > 0
        assert torch.isfinite(torch.sqrt(power)).all()
