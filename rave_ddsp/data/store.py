"""The preprocessed store and the audio sources that training crops are read from.

A data ``path`` (:func:`open_audio_source`) is one of

* a **store** written by ``scripts/preprocess.py`` (a folder with an ``index.json``);
* a **folder of audio files** (or one file), decoded and resampled at setup: held in
  memory when it fits in ``max_cache_mb``, else decoded lazily, crop by crop;
* ``"builtin:demo"``: the synthetic corpus of :mod:`rave_ddsp.data.corpus`, made in memory.

Store format (version 1): a folder holding

* ``audio.raw``: int16 little-endian PCM, full scale 32767, frames interleaved, i.e. a
  row-major ``[T_total, C]`` array, so a crop is one contiguous read;
* ``index.json``: ``format`` ("rave_ddsp.store"), ``version``, ``sample_rate``,
  ``channels``, ``dtype`` ("int16"), ``layout`` ("interleaved"), ``total_samples`` and
  ``items`` (``name`` relative to its input folder, ``offset`` and ``length`` in frames),
  plus the ``skipped`` files and their reasons.

Audio is decoded by :mod:`rave_ddsp.data.audio`. Files of digital silence are skipped (nothing to
learn); float audio beyond [-1, 1] is clipped, and each such file is named in a warning with
its share of clipped samples and its peak. Both checks need the decoded audio, so a folder too
large for memory (decoded lazily) is not audited.
"""
import bisect
import dataclasses
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from rave_ddsp.data import corpus
from rave_ddsp.data.audio import (AUDIO_EXTENSIONS, Clipping, PathLike, decode_audio, find_audio_files,
                             is_digital_silence, load_audio, measure_clipping, probe_audio)
from rave_ddsp.errors import UnusableFile, UserError

BUILTIN_DEMO = "builtin:demo"
STORE_FORMAT, STORE_VERSION = "rave_ddsp.store", 1
INDEX_FILE, AUDIO_FILE = "index.json", "audio.raw"
PCM_DTYPE = np.dtype("<i2")
PCM_SCALE = 32767.0
RESAMPLE_FILTER_WIDTH, RESAMPLE_ROLLOFF = 6, 0.99  # torchaudio.functional.resample's defaults


class Item(NamedTuple):
    """One file's audio in a source: ``length`` frames from frame ``offset``."""

    name: str
    offset: int
    length: int



def to_pcm(x: np.ndarray) -> np.ndarray:
    """Float ``[C, T]`` -> int16 ``[C, T]``, clipped to [-1, 1]."""
    return np.round(np.clip(x, -1.0, 1.0) * PCM_SCALE).astype(PCM_DTYPE)


DIGITAL_SILENCE = "digital silence (every sample below one 16-bit step)"


def load_training_audio(path: Path, name: str, sample_rate: int, channels: int, skipped: List[Tuple[str, str]],
                        clipped: List[Clipping]) -> Optional[np.ndarray]:
    """A file's audio ``[C, T]`` for training (not clipped yet), or None when it is unusable or
    digital silence (then ``(name, reason)`` is added to ``skipped``); a file beyond full scale
    is added to ``clipped``."""
    try:
        x = load_audio(path, sample_rate, channels)
    except UnusableFile as error:
        skipped.append((name, error.reason))
        return None
    if is_digital_silence(x):
        skipped.append((name, DIGITAL_SILENCE))
        return None
    clipping = measure_clipping(x, name)
    if clipping:
        clipped.append(clipping)
    return x


# ---------------------------------------------------------------------------- sources
# A source has ``sample_rate``, ``channels``, ``items`` (contiguous, in frame order) and
# ``read(offset, length) -> float32 [C, length]`` (zeros past the end).


def gather_frames(read: Callable[[int, int, int], np.ndarray], starts: Sequence[int], total: int,
                  channels: int, offset: int, length: int) -> np.ndarray:
    """Frames ``[offset, offset + length)`` of consecutive pieces (``starts``: their first frames).

    ``read(piece, offset_in_piece, n)`` returns ``[C, n]``. Returns float32 ``[C, length]``,
    zero past ``total``.
    """
    out = np.zeros((channels, length), np.float32)
    piece = bisect.bisect_right(starts, offset) - 1
    filled = 0
    while filled < length and offset + filled < total:
        position = offset + filled - starts[piece]
        end = starts[piece + 1] if piece + 1 < len(starts) else total
        n = min(length - filled, end - starts[piece] - position)
        out[:, filled : filled + n] = read(piece, position, n)
        filled += n
        piece += 1
    return out


class AudioStore:
    """A store written by :func:`preprocess`, read through a memory map (opened lazily, so
    DataLoader workers started by pickling do not copy the audio)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        index_path = self.path / INDEX_FILE
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{index_path}: cannot read the store index ({error})") from None
        if not isinstance(index, dict) or index.get("format") != STORE_FORMAT or index.get("version") != STORE_VERSION:
            raise UserError(f"{index_path}: not a {STORE_FORMAT} index of version {STORE_VERSION}; "
                            f"re-run scripts/preprocess.py")
        self.sample_rate, self.channels = int(index["sample_rate"]), int(index["channels"])
        self.total = int(index["total_samples"])
        self.items = [Item(i["name"], int(i["offset"]), int(i["length"])) for i in index["items"]]
        expected = self.total * self.channels * PCM_DTYPE.itemsize
        size = (self.path / AUDIO_FILE).stat().st_size if (self.path / AUDIO_FILE).is_file() else None
        if size != expected:
            raise UserError(f"{self.path / AUDIO_FILE}: expected {expected} bytes for {self.total} frames, "
                            f"found {size}; the store is incomplete, re-run scripts/preprocess.py")
        self._audio: Optional[np.ndarray] = None

    def read(self, offset: int, length: int) -> np.ndarray:
        """float32 ``[C, length]`` (zeros past the end)."""
        if self._audio is None:
            self._audio = np.memmap(self.path / AUDIO_FILE, PCM_DTYPE, "r", shape=(self.total, self.channels))
        frames = self._audio[offset : offset + length]  # [n, C]
        out = np.zeros((self.channels, length), np.float32)
        out[:, : len(frames)] = frames.T / PCM_SCALE
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_audio": None}


class MemoryAudio:
    """Audio held in memory: float32 ``audio [C, T_total]`` and its ``items``."""

    def __init__(self, audio: np.ndarray, items: Sequence[Item], sample_rate: int) -> None:
        self.audio, self.items, self.sample_rate = audio, list(items), sample_rate
        self.channels, self.total = audio.shape

    def read(self, offset: int, length: int) -> np.ndarray:
        """float32 ``[C, length]`` (zeros past the end)."""
        out = np.zeros((self.channels, length), np.float32)
        frames = self.audio[:, offset : offset + length]
        out[:, : frames.shape[1]] = frames
        return out


class LazyAudioFiles:
    """Audio files decoded on demand: a read decodes only the frames it needs and resamples
    them exactly as a whole-file ``torchaudio.functional.resample`` would (aligned to its
    polyphase blocks, with the filter's context on both sides)."""

    def __init__(self, files: Sequence[Tuple[Path, str, int, int]], sample_rate: int, channels: int) -> None:
        """``files``: ``(path, name, frames, rate)`` for each file."""
        self.files, self.sample_rate, self.channels = list(files), sample_rate, channels
        self.items, offset = [], 0
        for _, name, frames, rate in self.files:
            length = math.ceil(frames * sample_rate / rate)  # torchaudio's output length
            self.items.append(Item(name, offset, length))
            offset += length
        self.total = offset
        self._starts = [item.offset for item in self.items]

    def read(self, offset: int, length: int) -> np.ndarray:
        """float32 ``[C, length]`` clipped to [-1, 1] (zeros past the end)."""
        return gather_frames(self._read_file, self._starts, self.total, self.channels, offset, length)

    def _read_file(self, index: int, start: int, n: int) -> np.ndarray:
        path, _, _, rate = self.files[index]
        if rate == self.sample_rate:
            x, _ = decode_audio(path, self.channels, start, start + n)
            return np.clip(np.pad(x, ((0, 0), (0, n - x.shape[1]))), -1, 1)
        g = math.gcd(rate, self.sample_rate)
        down, up = rate // g, self.sample_rate // g  # `down` input frames -> `up` output frames
        width = math.ceil(RESAMPLE_FILTER_WIDTH * down / (min(down, up) * RESAMPLE_ROLLOFF))
        extra = math.ceil(width / down) + 1  # blocks of context before the first needed one
        first_block = start // up - extra
        in_start, in_stop = first_block * down, ((start + n - 1) // up + 1 + extra) * down + width
        x, _ = decode_audio(path, self.channels, max(in_start, 0), in_stop)
        x = np.pad(x, ((0, 0), (max(-in_start, 0), 0)))  # frames before the file are zeros
        y = torchaudio.functional.resample(torch.from_numpy(x), rate, self.sample_rate).numpy()
        y = y[:, start - first_block * up :][:, :n]
        return np.clip(np.pad(y, ((0, 0), (0, n - y.shape[1]))), -1, 1)


AudioSource = Union[AudioStore, MemoryAudio, LazyAudioFiles]


def open_audio_folder(path: PathLike, sample_rate: int, channels: int, max_cache_mb: float = 2048.0) -> AudioSource:
    """Audio files under ``path`` at ``sample_rate``: in memory if the float32 audio fits in
    ``max_cache_mb``, else decoded lazily. Unreadable and silent files are skipped, and clipped
    ones named, with a warning."""
    files, skipped = find_audio_files([path])
    probed = []
    for file, name in files:
        try:
            probed.append((file, name, *probe_audio(file, channels)))
        except UnusableFile as error:
            skipped.append((name, error.reason))
    clipped: List[Clipping] = []  # only known for audio decoded here
    size_mb = sum(frames * sample_rate / rate for _, _, frames, rate in probed) * channels * 4 / 2**20
    if size_mb > max_cache_mb:
        source: AudioSource = LazyAudioFiles(probed, sample_rate, channels)
    else:
        arrays, items, offset = [], [], 0
        for file, name, _, _ in probed:
            x = load_training_audio(file, name, sample_rate, channels, skipped, clipped)
            if x is None:
                continue
            arrays.append(np.clip(x, -1.0, 1.0))
            items.append(Item(name, offset, arrays[-1].shape[1]))
            offset += arrays[-1].shape[1]
        audio = np.concatenate(arrays, axis=1) if arrays else np.zeros((channels, 0), np.float32)
        source = MemoryAudio(audio, items, sample_rate)
    reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped)
    if not source.items:
        found = f"{len(files)} audio files, none readable ({reasons})" if files else \
            f"no files with an audio extension ({', '.join(AUDIO_EXTENSIONS)})"
        raise UserError(f"{path}: no readable audio: {found}")
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} files: {reasons}")
    for clipping in clipped:
        warnings.warn(f"{path}/{clipping}")
    return source


def open_audio_source(path: str, sample_rate: int, channels: int, max_cache_mb: float = 2048.0,
                      demo_seconds: float = corpus.DEFAULT_SECONDS) -> AudioSource:
    """The source a data ``path`` names (see the module docstring), at the model's rate and channels."""
    if path == BUILTIN_DEMO:
        audio = corpus.demo_corpus(sample_rate, channels, demo_seconds)  # [C, T]
        step = round(corpus.FILE_SECONDS * sample_rate)
        items = [Item(f"demo/{i:03d}", start, min(step, audio.shape[1] - start))
                 for i, start in enumerate(range(0, audio.shape[1], step))]
        return MemoryAudio(audio, items, sample_rate)
    if path.startswith("builtin:"):
        raise UserError(f"unknown data path {path!r}; the built-in corpus is {BUILTIN_DEMO!r}")
    if not Path(path).exists():
        raise UserError(f"data path {path!r} does not exist; expected a store written by scripts/preprocess.py, "
                        f"a folder of audio files, or {BUILTIN_DEMO!r}")
    if not (Path(path) / INDEX_FILE).is_file():
        return open_audio_folder(path, sample_rate, channels, max_cache_mb)
    store = AudioStore(path)
    for what, stored, wanted, option in (("sample_rate", store.sample_rate, sample_rate, "--sample-rate"),
                                         ("channels", store.channels, channels, "--channels")):
        if stored != wanted:
            raise UserError(f"{path}: the store has {what}={stored} but the model expects {what}={wanted}; "
                            f"re-run scripts/preprocess.py with {option} {wanted}, or set model.{what}: {stored}")
    return store


# ---------------------------------------------------------------------------- preprocessing


@dataclasses.dataclass(frozen=True)
class PreprocessSummary:
    """What :func:`preprocess` wrote: the items, the skipped files and the clipped ones."""

    output: Path
    sample_rate: int
    channels: int
    items: Tuple[Item, ...]
    skipped: Tuple[Tuple[str, str], ...]  # (name, reason)
    clipped: Tuple[Clipping, ...]

    @property
    def total_samples(self) -> int:
        return sum(item.length for item in self.items)

    def __str__(self) -> str:
        lines = [f"store: {self.output} ({self.sample_rate} Hz, {self.channels} channel(s))",
                 f"files read: {len(self.items)}, total {self.total_samples / self.sample_rate:.1f} s "
                 f"({self.total_samples} frames)"]
        if self.clipped:
            lines.append(f"samples clipped to [-1, 1]: {sum(c.samples for c in self.clipped)} in "
                         + ", ".join(f"{c.name} ({c.samples}, {c.percent:.1f} %, peak {c.peak:.3g})"
                                     for c in self.clipped))
        lines.append(f"files skipped: {len(self.skipped)}")
        lines += [f"  {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.is_file():
        raise UserError(f"{output}: is a file; expected a new or empty folder for the store")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not (output / INDEX_FILE).is_file():
        raise UserError(f"{output}: folder is not empty and holds no store ({INDEX_FILE}); "
                        f"refusing to write into it, choose another --output")
    if not overwrite:
        raise UserError(f"{output}: already holds a store; pass --overwrite to replace it")


def preprocess(inputs: Sequence[PathLike], output: PathLike, sample_rate: int = 44100, channels: int = 1,
               overwrite: bool = False, progress: bool = True) -> PreprocessSummary:
    """Decode, convert and resample audio files into a store at ``output`` (format: module docstring).

    The store is built in a hidden sibling folder and renamed into place once complete, so
    a failure (or Ctrl-C) never leaves a valid-looking store. Files of digital silence are
    skipped; clipped ones are listed in the summary (``clipped``). Raises :class:`UserError` when no file is
    readable, or when ``output`` exists and is not an empty folder (or a store with ``overwrite``).
    """
    if sample_rate <= 0 or channels < 1:
        raise UserError(f"expected sample_rate > 0 and channels >= 1, got {sample_rate} and {channels}")
    output = Path(output)
    _check_output(output, overwrite)
    files, skipped = find_audio_files(inputs)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    items: List[Item] = []
    clipped: List[Clipping] = []
    offset = 0
    partial.mkdir(parents=True)
    try:
        with open(partial / AUDIO_FILE, "wb") as audio_file:
            for path, name in tqdm(files, desc="preprocess", unit="file", disable=not progress):
                x = load_training_audio(path, name, sample_rate, channels, skipped, clipped)  # [C, T]
                if x is None:
                    continue
                pcm = to_pcm(x)
                audio_file.write(np.ascontiguousarray(pcm.T).tobytes())  # [T, C] interleaved
                items.append(Item(name, offset, pcm.shape[1]))
                offset += pcm.shape[1]
        if not items:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped) or \
                f"no files with an audio extension ({', '.join(AUDIO_EXTENSIONS)})"
            raise UserError(f"no readable audio in {', '.join(map(str, inputs))}: {reasons}")
        summary = PreprocessSummary(output, sample_rate, channels, tuple(items), tuple(skipped), tuple(clipped))
        index = {"format": STORE_FORMAT, "version": STORE_VERSION, "sample_rate": sample_rate, "channels": channels,
                 "dtype": "int16", "layout": "interleaved", "total_samples": summary.total_samples,
                 "items": [item._asdict() for item in items],
                 "skipped": [{"name": name, "reason": reason} for name, reason in skipped]}
        (partial / INDEX_FILE).write_text(json.dumps(index, indent=1))
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        if output.exists():  # a store, and overwrite was given
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            output.rename(old)
            partial.rename(output)
            shutil.rmtree(old)
        else:
            partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return summary
