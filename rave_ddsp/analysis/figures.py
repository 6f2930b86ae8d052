"""Figures of ``scripts/explore.py`` (matplotlib, Agg; returned to the caller, who saves them).

Audio is one mono ``[T]`` numpy signal per panel, latents ``[Z, L]``. Time axes are in
seconds; latent frame ``l`` is drawn at the centre of the samples it covers.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rave_ddsp.analysis.explore import FIDELITY_TARGETS, PCAReport
from rave_ddsp.plots import colour_top, log_spectrogram, plt

DYNAMIC_RANGE_DB = 80.0
MAX_LINES = 8
"""At most this many latent trajectories are drawn in one axis (more would be unreadable)."""
TARGET_STYLES = {0.9: ":", 0.95: "--", 0.99: "-."}


def _spectrogram(ax, signal: np.ndarray, sample_rate: int, top: Optional[float] = None):
    """Draw ``signal [T]``'s log spectrogram on ``ax`` (seconds x kHz); returns the image."""
    spec = log_spectrogram(signal)
    top = colour_top(float(spec.max()), DYNAMIC_RANGE_DB) if top is None else top
    extent = (0, len(signal) / sample_rate, 0, sample_rate / 2000)
    return ax.imshow(spec, origin="lower", aspect="auto", extent=extent, cmap="magma",
                     vmin=top - DYNAMIC_RANGE_DB, vmax=top)


def _latent_lines(ax, latent: np.ndarray, frame_rate: float, dims: int) -> None:
    """The first ``min(dims, MAX_LINES)`` rows of ``latent [Z, L]`` against time."""
    times = (np.arange(latent.shape[1]) + 0.5) / frame_rate
    shown = min(dims, MAX_LINES)
    for d in range(shown):
        ax.plot(times, latent[d], lw=1.0, label=f"dim {d}")
    ax.set_ylabel("PCA coordinate")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=shown, fontsize="small", frameon=False,
              handlelength=1.2, columnspacing=1.0, borderaxespad=0.1)  # above the axes, beside the title
    ax.grid(alpha=0.3)
    ax.set_title(f"latents (first {shown} of {latent.shape[0]} dims)" if shown < latent.shape[0]
                 else f"latents ({shown} dims)", loc="left")


def pca_figure(report: PCAReport, title: str) -> Figure:
    """Explained variance per dimension (bars) and the cumulative fidelity curves, targets marked."""
    total = float(report.variance.sum())
    z = report.variance.numel()
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    index = np.arange(z)
    bars.bar(index - 0.2, 100 * report.variance.numpy() / total, 0.4, label="data PCA direction")
    bars.bar(index + 0.2, 100 * report.axis_variance.numpy() / total, 0.4, label="model PCA coordinate")
    bars.set_xlabel("dimension (largest variance first)")
    bars.set_ylabel("explained variance (%)")
    bars.set_title("explained variance per dimension")
    bars.legend()
    kept = np.arange(1, z + 1)
    curves.plot(kept, report.fidelity.numpy(), "o-", label="data PCA (this data)")
    curves.plot(kept, report.axis_fidelity.numpy(), "s-", ms=4, label="model coordinates (this data)")
    if report.model_fidelity is not None:
        curves.plot(kept, report.model_fidelity.numpy(), "^-", ms=4, label="model's stored curve (training)")
    for target, size in zip(FIDELITY_TARGETS, report.sizes(report.fidelity).values()):
        style = TARGET_STYLES[target]
        curves.axhline(target, color="gray", ls=style, lw=0.8)
        curves.axvline(size, color="gray", ls=style, lw=0.8)
        curves.annotate(f"{target}: {size} dims", (size, target), textcoords="offset points", xytext=(4, -12),
                        fontsize="small")
    curves.set_xlabel("dimensions kept (k)")
    curves.set_ylabel("fidelity (cumulative explained variance)")
    curves.set_title("fidelity")
    curves.set_ylim(0, 1.02)
    curves.legend(loc="lower right")
    for ax in (bars, curves):
        ax.grid(alpha=0.3)
        if z <= 32:
            ax.set_xticks(index if ax is bars else kept)
    fig.suptitle(title)
    return fig


def spectrogram_grid(signals: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str],
                     column_labels: Sequence[str], sample_rate: int, title: str) -> Figure:
    """A grid of spectrograms (``signals[row][column]``, ``[T]`` each) on one dB scale."""
    rows, columns = len(signals), len(signals[0])
    top = colour_top(max(float(log_spectrogram(s).max()) for row in signals for s in row), DYNAMIC_RANGE_DB)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns + 1.2, 1.9 * rows + 0.8), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")
    for r in range(rows):
        for c in range(columns):
            image = _spectrogram(axes[r, c], signals[r][c], sample_rate, top)
            axes[r, c].set_title(f"{row_labels[r]}, {column_labels[c]}", fontsize="small")
            axes[r, c].xaxis.set_major_locator(MaxNLocator(4))
        axes[r, 0].set_ylabel("kHz")
    for c in range(columns):
        axes[-1, c].set_xlabel("seconds")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="dB", shrink=0.8)
    fig.suptitle(title)
    return fig


def trajectory_figure(latent: np.ndarray, audio: np.ndarray, sample_rate: int, frame_rate: float, dims: int,
                      title: str) -> Figure:
    """Latent trajectories ``[Z, L]`` above the spectrogram of the audio they decode to, shared time axis."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [1, 1.3]})
    _latent_lines(top, latent, frame_rate, dims)
    image = _spectrogram(bottom, audio, sample_rate)
    bottom.set_ylabel("kHz")
    bottom.set_xlabel("seconds")
    bottom.set_title("decoded audio")
    bottom.set_xlim(0, len(audio) / sample_rate)
    fig.colorbar(image, ax=[top, bottom], label="dB", shrink=0.5, anchor=(0.0, 0.0))  # both axes keep one width
    fig.suptitle(title)
    return fig


def analysis_figure(spectrograms: Sequence[Tuple[np.ndarray, str]], sample_rate: int, latent: np.ndarray,
                    frame_rate: float, dims: int, loudness: Tuple[np.ndarray, np.ndarray],
                    pitch: Optional[Tuple[np.ndarray, np.ndarray]], title: str) -> Figure:
    """Spectrograms, latent trajectories, loudness and (optionally) F0 of one sound, on one time axis.

    ``spectrograms`` are ``(signal [T], panel title)`` pairs, the sound first (e.g. then its
    reconstruction and the reconstruction's noise branch), drawn on one dB scale.
    ``loudness`` and ``pitch`` are ``(times [N], values [N])`` pairs (dB; Hz, NaN where unvoiced).
    """
    count = len(spectrograms)
    ratios = [1.0] * count + [1.2, 0.7] + ([0.9] if pitch is not None else [])
    fig, axes = plt.subplots(len(ratios), 1, figsize=(11, 2.2 * sum(ratios) + 1), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": ratios})
    top = colour_top(max(float(log_spectrogram(signal).max()) for signal, _ in spectrograms), DYNAMIC_RANGE_DB)
    for ax, (signal, panel_title) in zip(axes, spectrograms):
        image = _spectrogram(ax, signal, sample_rate, top)
        ax.set_ylabel("kHz")
        ax.set_title(panel_title, loc="left")
    fig.colorbar(image, ax=axes.tolist(), label="dB", shrink=0.3, anchor=(0.0, 1.0))  # all axes keep one width
    _latent_lines(axes[count], latent, frame_rate, dims)
    axes[count + 1].plot(*loudness, color="tab:green", lw=1.0)
    axes[count + 1].set_ylabel("dB")
    axes[count + 1].set_title("loudness (A-weighted)")
    axes[count + 1].grid(alpha=0.3)
    if pitch is not None:
        axes[count + 2].plot(*pitch, ".", color="tab:red", ms=2.5)
        axes[count + 2].set_ylabel("Hz")
        axes[count + 2].set_title("F0 (CREPE; confident frames only)")
        axes[count + 2].grid(alpha=0.3)
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, len(spectrograms[0][0]) / sample_rate)
    fig.suptitle(title)
    return fig
