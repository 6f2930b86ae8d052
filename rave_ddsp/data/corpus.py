"""The built-in demo corpus: synthetic notes and noises to train on without downloading data.

A corpus is a *score* (a list of :class:`Note` and :class:`NoiseBurst` events, in seconds,
independent of the sample rate) rendered to audio. Notes are additive harmonic tones
(spectral tilt, odd/even balance, optional inharmonicity, vibrato and glides, ADSR
envelopes at varied velocity) plus a breathy filtered-noise part; noise bursts are
band-passed noise; silence gaps separate phrases. Everything is deterministic given the
seed, and no partial is ever rendered at or above Nyquist (no aliasing).

Write it to disk to listen to it, or to feed ``scripts/preprocess.py``::

    python -m rave_ddsp.data.corpus OUT_DIR [--sample-rate 44100] [--seconds 120]
"""
import argparse
import dataclasses
import math
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import scipy.signal
import soundfile

from rave_ddsp.errors import UserError

DEFAULT_SECONDS = 120.0
FILE_SECONDS = 10.0  # the corpus is cut into items (and files) of this length
MIDI_RANGE = (36, 84)
MAX_PARTIALS = 64
ANTI_ALIAS_TAPER = 0.1  # partials fade out over the top 10 % of the band below Nyquist
MIN_PARTIAL_GAIN = 1e-4  # partials quieter than -80 dB (relative) are not rendered
PEAK = 0.95  # the rendered corpus is scaled down if it peaks above this


@dataclasses.dataclass(frozen=True)
class Note:
    """One note: times in seconds, pitches in (fractional) MIDI numbers."""

    start: float
    duration: float  # from onset to the start of the release
    pitch: float  # pitch after the glide
    glide_from: float  # pitch at the onset (== pitch: no glide)
    glide_time: float
    vibrato_rate: float  # Hz
    vibrato_cents: float
    velocity: float  # 0..1, mapped to -24..0 dB
    attack: float
    decay: float
    sustain: float  # level 0..1
    release: float
    tilt_db_per_octave: float  # spectral tilt of the partials (negative: darker)
    even_gain: float  # 0: odd partials only (clarinet-like), 1: all partials
    inharmonicity: float  # B in f_k = k f0 sqrt(1 + B k^2); 0: harmonic
    noise_level: float  # breath noise relative to the harmonic part
    pan: float  # 0..1 across the channels


@dataclasses.dataclass(frozen=True)
class NoiseBurst:
    """Band-passed noise (breath, wind, hiss): times in seconds."""

    start: float
    duration: float
    attack: float
    release: float
    center_hz: float
    octaves: float  # bandwidth
    level: float
    pan: float


Event = Union[Note, NoiseBurst]


def demo_score(seconds: float = DEFAULT_SECONDS, seed: int = 0) -> List[Event]:
    """A random but deterministic sequence of notes, noise bursts and silences."""
    rng = np.random.default_rng(seed)
    events: List[Event] = []
    t, pitch = 0.2, 60.0
    while t < seconds:
        kind = rng.random()
        if kind < 0.1:  # silence gap
            t += rng.uniform(0.4, 1.5)
        elif kind < 0.25:
            burst = NoiseBurst(
                start=t, duration=rng.uniform(0.1, 1.0), attack=rng.uniform(0.005, 0.3),
                release=rng.uniform(0.05, 0.6), center_hz=float(np.exp(rng.uniform(np.log(300), np.log(8000)))),
                octaves=rng.uniform(0.5, 3.0), level=rng.uniform(0.05, 0.4), pan=rng.uniform(0, 1),
            )
            events.append(burst)
            t += burst.duration + burst.release * rng.uniform(0.3, 1.0)
        else:
            previous = pitch
            if rng.random() < 0.3:
                pitch = float(rng.integers(MIDI_RANGE[0], MIDI_RANGE[1] + 1))
            else:
                pitch = float(np.clip(pitch + rng.integers(-7, 8), *MIDI_RANGE))
            percussive = rng.random() < 0.4
            note = Note(
                start=t, duration=rng.uniform(0.15, 1.5), pitch=pitch + rng.normal(0, 0.1),
                glide_from=previous if rng.random() < 0.2 else pitch, glide_time=rng.uniform(0.05, 0.3),
                vibrato_rate=rng.uniform(4, 7), vibrato_cents=rng.uniform(10, 60) if rng.random() < 0.35 else 0.0,
                velocity=rng.uniform(0.2, 1.0),
                attack=rng.uniform(0.002, 0.01) if percussive else rng.uniform(0.03, 0.3),
                decay=rng.uniform(0.05, 0.8),
                sustain=rng.uniform(0.0, 0.3) if percussive else rng.uniform(0.4, 1.0),
                release=rng.uniform(0.03, 0.6),
                tilt_db_per_octave=rng.uniform(-18, -3), even_gain=rng.uniform(0, 1),
                inharmonicity=float(10 ** rng.uniform(-5, -3.3)) if rng.random() < 0.25 else 0.0,
                noise_level=rng.uniform(0, 0.25), pan=rng.uniform(0, 1),
            )
            events.append(note)
            t += note.duration + note.release * rng.uniform(0.2, 1.0)
    return events


def harmonic_tone(f0: np.ndarray, amplitudes: np.ndarray, sample_rate: int, inharmonicity: float = 0.0) -> np.ndarray:
    """Sum of partials ``k = 1..K`` of a time-varying fundamental, band-limited.

    Args:
        f0: fundamental in Hz, shape ``[T]``.
        amplitudes: partial gains, shape ``[K]``.
        inharmonicity: ``B`` in ``f_k = k f0 sqrt(1 + B k^2)``.

    Returns:
        float32 ``[T]``. A partial is silent wherever its frequency is at or above Nyquist
        and fades in linearly over the top ``ANTI_ALIAS_TAPER`` of the band below it.
    """
    nyquist = sample_rate / 2
    fade_start = (1 - ANTI_ALIAS_TAPER) * nyquist
    phase = np.cumsum(f0 / sample_rate)  # [T] cycles of the fundamental, float64
    theta = (2 * np.pi * (phase - np.floor(phase))).astype(np.float32)  # [T] wrapped fundamental phase
    f0_min, f0_max = float(f0.min()), float(f0.max())
    out = np.zeros(len(f0), np.float32)
    for k, gain in enumerate(amplitudes, start=1):
        ratio = k * math.sqrt(1 + inharmonicity * k * k)
        if gain < MIN_PARTIAL_GAIN or ratio * f0_min >= nyquist:
            continue
        if inharmonicity == 0:
            partial = np.sin(np.float32(k) * theta)  # k * wrapped phase: exact for integer k
        else:
            cycles = ratio * phase
            partial = np.sin((2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32))
        if ratio * f0_max > fade_start:
            partial *= np.clip((nyquist - ratio * f0) / (ANTI_ALIAS_TAPER * nyquist), 0.0, 1.0).astype(np.float32)
        out += np.float32(gain) * partial
    return out


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float, sample_rate: int) -> np.ndarray:
    """Unit-RMS-ish Gaussian noise band-passed to ``[low, high]`` Hz, shape ``[n]``."""
    nyquist = sample_rate / 2
    high = min(high, 0.45 * sample_rate)
    low = min(max(low, 20.0), 0.5 * high)
    sos = scipy.signal.butter(2, [low / nyquist, high / nyquist], btype="bandpass", output="sos")
    noise = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    return (noise / max(float(np.std(noise)), 1e-9)).astype(np.float32)


def _pan_gains(pan: float, channels: int) -> np.ndarray:
    """Equal-power gains ``[C]`` placing a source at ``pan`` (0..1) across the channels."""
    if channels == 1:
        return np.ones(1, np.float32)
    distance = np.abs(pan * (channels - 1) - np.arange(channels))
    return np.sqrt(np.clip(1 - distance, 0, 1)).astype(np.float32)


def _render_note(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(round((note.duration + note.release) * sample_rate)) / sample_rate  # [T]
    glide = np.clip(t / note.glide_time, 0, 1)
    vibrato = note.vibrato_cents / 100 * np.sin(2 * np.pi * note.vibrato_rate * t) * np.clip(t / 0.3, 0, 1)
    pitch = note.glide_from + (note.pitch - note.glide_from) * glide + vibrato
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    k = np.arange(1, MAX_PARTIALS + 1)
    amplitudes = 10 ** (note.tilt_db_per_octave * np.log2(k) / 20) * np.where(k % 2 == 0, note.even_gain, 1.0)
    amplitudes /= amplitudes.sum()  # the harmonic part never exceeds 1
    envelope = np.interp(np.minimum(t, note.duration), [0, note.attack, note.attack + note.decay], [0, 1, note.sustain])
    envelope *= np.clip((note.duration + note.release - t) / note.release, 0, 1)
    base = float(f0.mean())
    breath = 0.25 * note.noise_level * _band_noise(rng, len(t), 2 * base, 16 * base, sample_rate)
    gain = 10 ** (24 * (note.velocity - 1) / 20)
    return gain * envelope * (harmonic_tone(f0, amplitudes, sample_rate, note.inharmonicity) + breath)


def _render_burst(burst: NoiseBurst, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(round((burst.duration + burst.release) * sample_rate)) / sample_rate
    envelope = np.clip(t / burst.attack, 0, 1) * np.clip((burst.duration + burst.release - t) / burst.release, 0, 1)
    half_band = 2 ** (burst.octaves / 2)
    noise = _band_noise(rng, len(t), burst.center_hz / half_band, burst.center_hz * half_band, sample_rate)
    return 0.25 * burst.level * envelope * noise


def render(score: Sequence[Event], sample_rate: int, channels: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Render a score to float32 audio ``[C, T]`` with ``T = round(seconds * sample_rate)``."""
    rng = np.random.default_rng([seed, 1])  # noise stream, separate from the score's
    out = np.zeros((channels, round(seconds * sample_rate)), np.float32)
    for event in score:
        render_event = _render_note if isinstance(event, Note) else _render_burst
        sound = render_event(event, sample_rate, rng)
        start = round(event.start * sample_rate)
        sound = sound[: max(out.shape[1] - start, 0)]
        out[:, start : start + len(sound)] += _pan_gains(event.pan, channels)[:, None] * sound  # [C, n]
    peak = float(np.abs(out).max())
    return out * (PEAK / peak) if peak > PEAK else out


def demo_corpus(sample_rate: int, channels: int = 1, seconds: float = DEFAULT_SECONDS, seed: int = 0) -> np.ndarray:
    """The built-in demo corpus: float32 ``[C, T]``, ``T = round(seconds * sample_rate)``, peak <= 0.95."""
    if sample_rate < 4000 or channels < 1 or seconds <= 0:
        raise UserError(f"demo corpus: expected sample_rate >= 4000, channels >= 1, seconds > 0; "
                         f"got {sample_rate}, {channels}, {seconds}")
    return render(demo_score(seconds, seed), sample_rate, channels, seconds, seed)


def write_demo_corpus(out_dir: Union[str, Path], sample_rate: int = 44100, channels: int = 1,
                      seconds: float = DEFAULT_SECONDS, seed: int = 0) -> List[Path]:
    """Write the demo corpus as FLAC files of ``FILE_SECONDS`` each; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = demo_corpus(sample_rate, channels, seconds, seed)
    step = round(FILE_SECONDS * sample_rate)
    paths = []
    for i, start in enumerate(range(0, audio.shape[1], step)):
        path = out_dir / f"demo_{i:03d}.flac"
        soundfile.write(str(path), audio[:, start : start + step].T, sample_rate, subtype="PCM_16")  # [T, C]
        paths.append(path)
    return paths


def main(argv: Sequence[str] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rave_ddsp.data.corpus",
                                     description="Write the demo corpus as FLAC files.")
    parser.add_argument("out_dir")
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_demo_corpus(args.out_dir, args.sample_rate, args.channels, args.seconds, args.seed)
    print(f"wrote {len(paths)} files ({args.seconds:g} s at {args.sample_rate} Hz) to {args.out_dir}")


if __name__ == "__main__":
    main()
