"""Training and validation crops from a data path, and the LightningDataModule that serves them.

The data path is opened by :func:`rave_ddsp.data.store.open_audio_source` (a store, a folder
of audio files, or ``"builtin:demo"``).

Train/validation split (:func:`split_items`): deterministic given the seed, by whole files,
topped up by the tail of one file when whole files cannot reach ``val_fraction``, so a
one-file corpus still has validation audio; the two never overlap. Training crops are
taken anywhere in the concatenation of the training audio (short files are joined with
their neighbours); validation crops sit at fixed offsets. Audio shorter than one crop is
padded with silence, with a warning.
"""
import math
import warnings
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import lightning
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from rave_ddsp.data import corpus
from rave_ddsp.data.augment import Augmentation
from rave_ddsp.errors import UserError
from rave_ddsp.data.store import BUILTIN_DEMO, AudioSource, Item, gather_frames, open_audio_source


class Segment(NamedTuple):
    offset: int
    length: int


def split_items(items: Sequence[Item], val_fraction: float, seed: int) -> Tuple[List[Segment], List[Segment]]:
    """Deterministic ``(train, validation)`` segments covering ``items`` without overlap.

    Files are shuffled (seeded, from name order) and taken whole into validation while they
    fit in ``val_fraction`` of the total. If that reaches less than half the target, the
    shortfall is the tail of the longest remaining file (so one or two files still split).
    Both lists are sorted by offset.
    """
    total = sum(item.length for item in items)
    if total < 2:
        raise UserError(f"the corpus holds {total} frames; at least 2 are needed to split training and validation")
    target = max(1, round(val_fraction * total))
    order = sorted(items, key=lambda item: (item.name, item.offset))
    order = [order[i] for i in np.random.default_rng(seed).permutation(len(order))]
    val: List[Segment] = []
    rest: List[Item] = []
    val_frames = 0
    for item in order:
        if val_frames + item.length <= target:
            val.append(Segment(item.offset, item.length))
            val_frames += item.length
        else:
            rest.append(item)
    train = [Segment(item.offset, item.length) for item in rest]
    need = target - val_frames
    if need > target / 2:
        longest = max(range(len(rest)), key=lambda i: rest[i].length)  # its length > need
        head = rest[longest]
        train[longest] = Segment(head.offset, head.length - need)
        val.append(Segment(head.offset + head.length - need, need))
    return sorted(train), sorted(val)  # in source order: crops that cross a boundary join neighbours


class _Stream:
    """The concatenation of ``segments`` of a source, read as one signal ``[C, total]``."""

    def __init__(self, source: AudioSource, segments: Sequence[Segment]) -> None:
        self.source, self.segments = source, tuple(segments)
        self.starts = [int(s) for s in np.cumsum([0] + [s.length for s in self.segments])[:-1]]
        self.total = sum(s.length for s in self.segments)

    def read(self, offset: int, length: int) -> np.ndarray:
        """float32 ``[C, length]``, zeros past the end."""
        return gather_frames(lambda i, start, n: self.source.read(self.segments[i].offset + start, n),
                             self.starts, self.total, self.source.channels, offset, length)


class RandomCrops(Dataset):
    """Random crops ``[C, n_signal]`` of the training audio, augmented.

    The index is the crop's seed (:class:`CropSeedSampler` draws them): the seed fixes the
    crop and its augmentations, whichever worker loads it.
    """

    def __init__(self, source: AudioSource, segments: Sequence[Segment], n_signal: int, length: int,
                 augmentations: Sequence[Augmentation] = ()) -> None:
        self.stream, self.n_signal, self.length = _Stream(source, segments), n_signal, length
        self.augmentations = tuple(augmentations)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, seed: int) -> Tensor:
        generator = torch.Generator().manual_seed(int(seed))
        start = int(torch.randint(0, max(self.stream.total - self.n_signal, 0) + 1, (), generator=generator))
        x = torch.from_numpy(self.stream.read(start, self.n_signal))  # [C, n_signal]
        for augmentation in self.augmentations:
            x = augmentation(x, generator, self.stream.source.sample_rate)
        return x


class FixedCrops(Dataset):
    """Validation crops ``[C, n_signal]`` at fixed offsets spread over the validation audio."""

    def __init__(self, source: AudioSource, segments: Sequence[Segment], n_signal: int, max_items: int) -> None:
        self.stream, self.n_signal = _Stream(source, segments), n_signal
        count = min(max(1, math.ceil(self.stream.total / n_signal)), max_items)
        self.starts = [int(s) for s in np.round(np.linspace(0, max(self.stream.total - n_signal, 0), count))]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(self.stream.read(self.starts[index], self.n_signal))  # [C, n_signal]


class CropSeedSampler(Sampler):
    """Yields ``num_crops`` crop seeds per epoch, drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each epoch; without it, each pass over the
    sampler moves on to the next epoch. Crops thus differ between epochs and between
    workers, and a run is reproducible from its seed.
    """

    def __init__(self, num_crops: int, seed: int) -> None:
        self.num_crops, self.seed, self.epoch = num_crops, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_crops

    def __iter__(self) -> Iterator[int]:
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(0, 2**62, self.num_crops)
        self.epoch += 1
        return iter(seeds.tolist())


# ---------------------------------------------------------------------------- Lightning


class AudioDataModule(lightning.LightningDataModule):
    """Training crops and validation crops ``[B, C, n_signal]`` from a data ``path``.

    Args:
        path: a store, a folder of audio files, or ``"builtin:demo"`` (see :mod:`rave_ddsp.data.store`).
        sample_rate, channels, n_signal: linked from the model by the CLI.
        batch_size, num_workers: of both DataLoaders (``val_batch_size`` overrides).
        val_fraction: share of the audio held out for validation, in (0, 0.5].
        augmentations: applied in order to training crops only.
        seed: fixes the split, the crops and their augmentations.
        max_val_items: at most this many validation crops.
        crops_per_epoch: default ``max(training frames // n_signal, batch_size)``.
        demo_seconds: length of the ``builtin:demo`` corpus (always made with seed 0).
        max_cache_mb: audio folders larger than this (float32) are decoded lazily.
    """

    def __init__(self, path: str = BUILTIN_DEMO, sample_rate: int = 44100, channels: int = 1, n_signal: int = 131072,
                 batch_size: int = 8, num_workers: int = 0, val_fraction: float = 0.05,
                 augmentations: Optional[List[Augmentation]] = None, seed: int = 0,
                 val_batch_size: Optional[int] = None, max_val_items: int = 64, crops_per_epoch: Optional[int] = None,
                 demo_seconds: float = corpus.DEFAULT_SECONDS, max_cache_mb: float = 2048.0) -> None:
        super().__init__()
        for name, value, low in (("sample_rate", sample_rate, 1), ("channels", channels, 1), ("n_signal", n_signal, 1),
                                 ("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("max_val_items", max_val_items, 1), ("val_batch_size", val_batch_size or 1, 1),
                                 ("crops_per_epoch", crops_per_epoch or 1, 1), ("demo_seconds", demo_seconds, 1e-3)):
            if value < low:
                raise UserError(f"data.{name} must be >= {low}, got {value}")
        if not 0 < val_fraction <= 0.5:
            raise UserError(f"data.val_fraction must be in (0, 0.5], got {val_fraction}")
        self.path, self.sample_rate, self.channels, self.n_signal = path, sample_rate, channels, n_signal
        self.batch_size, self.num_workers, self.val_fraction, self.seed = batch_size, num_workers, val_fraction, seed
        self.augmentations = tuple(augmentations or ())
        self.val_batch_size, self.max_val_items = val_batch_size or batch_size, max_val_items
        self.crops_per_epoch = crops_per_epoch
        self.demo_seconds, self.max_cache_mb = demo_seconds, max_cache_mb
        self.source: Optional[AudioSource] = None
        self.train_dataset: Optional[RandomCrops] = None
        self.val_dataset: Optional[FixedCrops] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.source is not None:
            return
        source = open_audio_source(self.path, self.sample_rate, self.channels, self.max_cache_mb, self.demo_seconds)
        train, val = split_items(source.items, self.val_fraction, self.seed)
        self._warn_short(source, train, val)
        train_frames = sum(s.length for s in train)
        crops = self.crops_per_epoch or max(train_frames // self.n_signal, self.batch_size)
        self.train_dataset = RandomCrops(source, train, self.n_signal, crops, self.augmentations)
        self.val_dataset = FixedCrops(source, val, self.n_signal, self.max_val_items)
        self.source = source

    def _warn_short(self, source: AudioSource, train: Sequence[Segment], val: Sequence[Segment]) -> None:
        crop = f"one crop (n_signal={self.n_signal} frames, {self.n_signal / self.sample_rate:.2f} s)"
        short = sum(item.length < self.n_signal for item in source.items)
        if short:
            warnings.warn(f"{self.path}: {short} of {len(source.items)} files are shorter than {crop}; "
                          f"training crops join them with their neighbours")
        for split, segments in (("training", train), ("validation", val)):
            frames = sum(s.length for s in segments)
            if frames < self.n_signal:
                warnings.warn(f"{self.path}: the {split} audio ({frames / self.sample_rate:.2f} s) is shorter than "
                              f"{crop}; its crops are padded with silence")

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None, "call setup() first"
        sampler = CropSeedSampler(len(self.train_dataset), self.seed)
        return DataLoader(self.train_dataset, self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          drop_last=True, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        assert self.val_dataset is not None, "call setup() first"
        return DataLoader(self.val_dataset, self.val_batch_size, shuffle=False, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
