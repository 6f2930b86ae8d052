"""Reading audio files: finding them, probing and decoding them; the one place that decodes audio.

Decoding (soundfile, by extension, any case): wav, flac, ogg/opus, mp3, aiff. Channels:
kept, mono repeated to C, or averaged to mono (other mismatches are unreadable). Resampling:
``torchaudio.functional.resample``. A file that cannot be used raises :class:`rave_ddsp.errors.UnusableFile`.
"""
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch
import torchaudio

from rave_ddsp.errors import UnusableFile, UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")
PathLike = Union[str, Path]


SILENCE_PEAK = 1.0 / 32768
"""Below one 16-bit step everywhere: digital silence, which teaches a model nothing."""


def is_digital_silence(x: np.ndarray) -> bool:
    """Whether every sample of ``x`` is below one 16-bit step (exact zeros, or dither-free fades)."""
    return x.size == 0 or float(np.max(np.abs(x))) < SILENCE_PEAK


class Clipping(NamedTuple):
    """Samples of one file beyond full scale, which training clips to [-1, 1]."""

    name: str
    samples: int
    percent: float
    peak: float

    def __str__(self) -> str:
        return (f"{self.name}: {self.percent:.1f} % of samples beyond full scale (peak {self.peak:.3g}), "
                "clipped to [-1, 1]; normalise it if that is not intended")


def measure_clipping(x: np.ndarray, name: str) -> Optional[Clipping]:
    """How much of ``x`` lies beyond [-1, 1] (None if nothing does)."""
    over = int(np.count_nonzero(np.abs(x) > 1.0))
    if not over:
        return None
    return Clipping(name, over, 100.0 * over / x.size, float(np.max(np.abs(x))))


def find_audio_files(inputs: Sequence[PathLike]) -> Tuple[List[Tuple[Path, str]], List[Tuple[str, str]]]:
    """Audio files (by extension) in ``inputs``, folders searched recursively, in sorted order.

    Returns ``(files, skipped)``: ``(path, name)`` pairs, the name relative to its input
    folder; and ``(name, reason)`` for inputs given explicitly with another extension.
    """
    files: List[Tuple[Path, str]] = []
    skipped: List[Tuple[str, str]] = []
    seen = set()
    for given in inputs:
        root = Path(given)
        if not root.exists():
            raise UserError(f"{given}: no such file or folder")
        if root.is_dir():
            found = sorted((p, p.relative_to(root).as_posix()) for p in root.rglob("*")
                           if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        elif root.suffix.lower() in AUDIO_EXTENSIONS:
            found = [(root, root.name)]
        else:
            expected = ", ".join(AUDIO_EXTENSIONS)
            skipped.append((str(given), f"unsupported extension {root.suffix!r} (expected one of {expected})"))
            continue
        for path, name in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                files.append((path, name))
    return files, skipped


def convert_channels(x: np.ndarray, channels: int, path: PathLike) -> np.ndarray:
    """``[C_in, T] -> [channels, T]``: kept, mono repeated, or averaged down to mono."""
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1:
        return np.repeat(x, channels, axis=0)
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    raise UnusableFile(path, f"has {x.shape[0]} channels, expected 1 or {channels}")


def probe_audio(path: PathLike, channels: int) -> Tuple[int, int]:
    """``(frames, sample rate)`` from the file's header, checked to be usable for ``channels``."""
    try:
        info = soundfile.info(str(path))
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise UnusableFile(path, f"cannot decode audio ({error})") from None
    if info.channels not in (1, channels) and channels != 1:
        raise UnusableFile(path, f"has {info.channels} channels, expected 1 or {channels}")
    if info.frames <= 0:
        raise UnusableFile(path, "holds no samples")
    return info.frames, info.samplerate


def decode_audio(path: PathLike, channels: int, start: int = 0, stop: Optional[int] = None) -> Tuple[np.ndarray, int]:
    """Frames ``[start, stop)`` of a file at its own rate: float32 ``[channels, T]`` and the rate."""
    try:
        data, rate = soundfile.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)  # [T, C_in]
    except (soundfile.SoundFileError, RuntimeError, OSError, ValueError) as error:
        raise UnusableFile(path, f"cannot decode audio ({error})") from None
    if not np.isfinite(data).all():
        raise UnusableFile(path, "contains NaN or infinite samples")
    return convert_channels(data.T, channels, path), rate


def load_audio(path: PathLike, sample_rate: int, channels: int) -> np.ndarray:
    """A whole file, converted to float32 ``[channels, T]`` at ``sample_rate`` (not clipped)."""
    x, rate = decode_audio(path, channels)
    if x.shape[1] == 0:
        raise UnusableFile(path, "holds no samples")
    if rate != sample_rate:
        x = torchaudio.functional.resample(torch.from_numpy(x), rate, sample_rate).numpy()
    return x
