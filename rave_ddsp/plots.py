"""Matplotlib figures shared by the scripts and the TensorBoard logger (PNG-ready).

Nothing here touches the screen: figures use the Agg backend and are returned to the
caller, who saves them (``fig.savefig(path)``) or logs them.
"""
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


FLOOR_DB = -100.0
"""What :func:`log_spectrogram` gives silence (its 1e-5 magnitude floor)."""


def colour_top(peak_db: float, dynamic_range_db: float) -> float:
    """The top of a colour scale of ``dynamic_range_db``: the signal's peak, but never so low that
    the floor (silence) would be drawn bright; quiet signals then look quiet."""
    return max(peak_db, FLOOR_DB + dynamic_range_db)


def log_spectrogram(audio: np.ndarray, n_fft: int = 2048, hop: int = 256) -> np.ndarray:
    """``[T]`` audio -> ``[F, frames]`` magnitude in dB (Hann window, 1e-5 floor).

    Signals shorter than ``n_fft`` get a shorter window (the largest power of two that fits).
    """
    signal = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    while n_fft > 16 and n_fft > signal.shape[-1]:
        n_fft //= 2
    hop = min(hop, n_fft // 4)
    spec = torch.stft(signal, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20 * torch.log10(spec + 1e-5)).numpy()


def spectrogram_panels(
    signals: Sequence[np.ndarray],
    titles: Sequence[str],
    sample_rate: int,
    n_fft: int = 2048,
    hop: int = 256,
    dynamic_range_db: float = 80.0,
    suptitle: Optional[str] = None,
) -> Figure:
    """One spectrogram per ``[T]`` signal, stacked vertically on a shared dB scale."""
    specs = [log_spectrogram(s, n_fft, hop) for s in signals]
    top = colour_top(max(float(s.max()) for s in specs), dynamic_range_db)
    fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.6 * len(specs)), squeeze=False, layout="constrained")
    for ax, spec, title, signal in zip(axes[:, 0], specs, titles, signals):
        extent = (0, len(signal) / sample_rate, 0, sample_rate / 2000)
        image = ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma",
                          vmin=top - dynamic_range_db, vmax=top)
        ax.set_title(title)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("seconds")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB")
    if suptitle:
        fig.suptitle(suptitle)
    return fig
