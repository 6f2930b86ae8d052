import dataclasses
import math

import numpy as np
import pytest
import soundfile

from rave_ddsp.data import corpus
from rave_ddsp.errors import UserError

SR = 8000


def _spectrum(x: np.ndarray, sample_rate: int):
    """Power spectra (Blackman window) of ``x [..., T]`` along the last axis, and their frequencies."""
    power = np.abs(np.fft.rfft(x * np.blackman(x.shape[-1]))) ** 2
    return np.fft.rfftfreq(x.shape[-1], 1 / sample_rate), power


def _power_away_from(freqs, power, partials, tolerance_hz):
    near = np.zeros(len(freqs), bool)
    for f in partials:
        near |= np.abs(freqs - f) <= tolerance_hz
    return power[~near].sum() / power.sum()


def test_demo_corpus_is_deterministic_given_the_seed():
    a = corpus.demo_corpus(SR, seconds=6, seed=3)
    assert np.array_equal(a, corpus.demo_corpus(SR, seconds=6, seed=3))
    assert not np.allclose(a, corpus.demo_corpus(SR, seconds=6, seed=4))


@pytest.mark.parametrize("channels", [1, 2])
def test_demo_corpus_shape_peak_and_silences(channels):
    x = corpus.demo_corpus(SR, channels=channels, seconds=30)
    assert x.shape == (channels, 30 * SR) and x.dtype == np.float32
    assert np.abs(x).max() <= corpus.PEAK + 1e-6
    assert np.sqrt(np.mean(x**2)) > 0.01
    window_rms = np.sqrt((x[0, : 30 * SR].reshape(-1, SR // 10) ** 2).mean(axis=1))  # 0.1 s windows
    assert (window_rms < 1e-4).mean() > 0.02, "expected silence gaps"
    if channels == 2:
        assert not np.allclose(x[0], x[1]), "events are panned"


def test_demo_corpus_is_varied():
    score = corpus.demo_score(60)
    notes = [e for e in score if isinstance(e, corpus.Note)]
    pitches = [n.pitch for n in notes]
    assert max(pitches) - min(pitches) >= 30
    assert any(n.vibrato_cents > 0 for n in notes) and any(n.glide_from != n.pitch for n in notes)
    assert any(n.inharmonicity > 0 for n in notes)
    assert any(isinstance(e, corpus.NoiseBurst) for e in score)
    velocities = [n.velocity for n in notes]
    assert max(velocities) - min(velocities) > 0.5
    # The audio itself: loudness and spectral centroid spread over 0.25 s windows.
    x = corpus.render(score, SR, 1, 60)[0].reshape(-1, SR // 4)  # [windows, samples]
    freqs, power = _spectrum(x, SR)
    rms_db = 10 * np.log10((x**2).mean(axis=1) + 1e-12)
    sounding = rms_db > -50
    centroid = (power * freqs).sum(axis=1)[sounding] / power.sum(axis=1)[sounding]
    assert np.percentile(centroid, 90) / np.percentile(centroid, 10) > 2
    assert np.percentile(rms_db[sounding], 90) - np.percentile(rms_db[sounding], 10) > 10


@pytest.mark.parametrize("f0, inharmonicity", [(2500.0, 0.0), (700.0, 0.0), (450.0, 3e-4), (97.0, 0.0)],
                         ids=["one-partial", "harmonic", "inharmonic", "low"])
def test_harmonic_tone_has_no_partial_at_or_above_nyquist(f0, inharmonicity):
    x = corpus.harmonic_tone(np.full(SR, f0), np.ones(60), SR, inharmonicity)
    freqs, power = _spectrum(x, SR)
    partials = [k * f0 * math.sqrt(1 + inharmonicity * k * k) for k in range(1, 61)]
    below = [f for f in partials if f < SR / 2]
    assert _power_away_from(freqs, power, below, tolerance_hz=10) < 1e-6  # an alias would land elsewhere


def test_rendered_note_with_vibrato_and_glide_is_band_limited():
    # 1046.5 Hz at 4 kHz: any alias of partials 2, 3, ... would land away from the fundamental.
    note = corpus.Note(start=0.0, duration=1.5, pitch=84.0, glide_from=83.0, glide_time=0.2, vibrato_rate=5.0,
                       vibrato_cents=20.0, velocity=1.0, attack=0.1, decay=0.1, sustain=0.8, release=0.3,
                       tilt_db_per_octave=-1.0, even_gain=1.0, inharmonicity=0.0, noise_level=0.0, pan=0.5)
    x = corpus.render([note], 4000, 1, 2.0)[0]
    freqs, power = _spectrum(x, 4000)
    assert _power_away_from(freqs, power, [1046.5], tolerance_hz=80) < 1e-5
    bright = dataclasses.replace(note, vibrato_cents=0.0, glide_from=84.0)
    x = corpus.render([bright], 16000, 1, 2.0)[0]  # at 16 kHz, partials 2..7 are kept
    freqs, power = _spectrum(x, 16000)
    assert power[np.abs(freqs - 2 * 1046.5) < 5].sum() / power.sum() > 0.05


def test_write_demo_corpus_writes_flac_files_equal_to_the_corpus(tmp_path, capsys):
    corpus.main([str(tmp_path), "--sample-rate", str(SR), "--seconds", "12", "--channels", "2"])
    assert "wrote 2 files" in capsys.readouterr().out
    paths = sorted(tmp_path.glob("*.flac"))
    assert [p.name for p in paths] == ["demo_000.flac", "demo_001.flac"]
    audio = np.concatenate([soundfile.read(str(p), dtype="float32")[0] for p in paths]).T  # [C, T]
    np.testing.assert_allclose(audio, corpus.demo_corpus(SR, 2, 12), atol=1 / 32767)
    assert soundfile.info(str(paths[0])).samplerate == SR


def test_demo_corpus_rejects_bad_arguments():
    with pytest.raises(UserError, match="sample_rate >= 4000"):
        corpus.demo_corpus(1000)
