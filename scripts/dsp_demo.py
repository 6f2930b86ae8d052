"""Filtered-noise demo: synthesise noise with a moving resonance and plot what came out.

    python scripts/dsp_demo.py [--output outputs/dsp_demo.png] [--seconds 3]

Writes the PNG (spectrogram of the noise; requested vs realised spectrum of a
stationary segment) and a WAV beside it, and prints the largest spectral error.
"""
import argparse
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import torch

from rave_ddsp.dsp import filtered_noise as dsp
from rave_ddsp.files import atomic_path, save_figure
from rave_ddsp.plots import plt, spectrogram_panels

SAMPLE_RATE = 44100
FRAME_SIZE = 256
N_FREQUENCIES = 129


def resonance(centre_hz: np.ndarray) -> np.ndarray:
    """``[L]`` centre frequencies -> ``[L, K]`` magnitudes: a 40 dB resonance on a tilted floor."""
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FREQUENCIES)
    octaves = np.log2((freqs[None, :] + 50) / centre_hz[:, None])
    db = -40 + 40 * np.exp(-0.5 * (octaves / 0.15) ** 2) - 6 * freqs[None, :] / 22050
    return 10 ** (db / 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("outputs/dsp_demo.png"), help="PNG to write")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the sweep")
    args = parser.parse_args()

    torch.manual_seed(0)
    n_frames = int(args.seconds * SAMPLE_RATE / FRAME_SIZE)
    sweep = resonance(np.geomspace(200, 12000, n_frames))
    noise = dsp.filtered_noise(torch.tensor(sweep), FRAME_SIZE).numpy()

    steady_request = resonance(np.array([2000.0]))[0]
    steady_frames = 4 * SAMPLE_RATE // FRAME_SIZE
    steady = dsp.filtered_noise(torch.tensor(steady_request).expand(steady_frames, -1), FRAME_SIZE).numpy()
    freqs, psd = scipy.signal.welch(steady, fs=SAMPLE_RATE, nperseg=1024, detrend=False)
    response = np.abs(np.fft.rfft(dsp.impulse_response(torch.tensor(steady_request)).numpy(), 1024)) ** 2
    expected = 2 * response / (3 * SAMPLE_RATE)  # uniform noise variance 1/3, one-sided density
    error_db = 10 * np.log10(psd[1:-1] / expected[1:-1])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    wav = args.output.with_suffix(".wav")
    with atomic_path(wav) as temporary:
        sf.write(temporary, 0.5 * noise / np.abs(noise).max(), SAMPLE_RATE, format="WAV")
    fig = spectrogram_panels([noise], ["filtered noise, resonance sweeping 200 Hz -> 12 kHz"], SAMPLE_RATE)
    save_figure(fig, args.output, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.semilogx(freqs[1:-1], 10 * np.log10(expected[1:-1]), label="windowed response (expected)")
    ax.semilogx(freqs[1:-1], 10 * np.log10(psd[1:-1]), label="realised (Welch)", alpha=0.7)
    ax.set_xlabel("Hz")
    ax.set_ylabel("dB")
    ax.legend()
    ax.set_title(f"stationary request: largest error {np.abs(error_db).max():.2f} dB")
    spectrum_png = args.output.with_name(args.output.stem + "_spectrum.png")
    save_figure(fig, spectrum_png, dpi=100)
    plt.close(fig)
    print(f"wrote {args.output}, {spectrum_png} and {wav}")
    print(f"realised vs expected spectrum: largest error {np.abs(error_db).max():.2f} dB")


if __name__ == "__main__":
    main()
