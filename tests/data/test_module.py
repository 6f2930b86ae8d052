import pickle
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import soundfile
import torch
from jsonargparse import ArgumentParser

from rave_ddsp.data.augment import Mute, RandomGain
from rave_ddsp.data.module import AudioDataModule, CropSeedSampler, FixedCrops, RandomCrops, split_items
from rave_ddsp.data.store import Item, LazyAudioFiles, MemoryAudio, open_audio_folder, preprocess
from rave_ddsp.errors import UserError

SR = 8000
N = 1024


def _write_tones(folder: Path, seconds: Sequence = (1.0, 0.7, 0.5, 1.2), rate: int = SR, channels: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, length in enumerate(seconds):
        t = np.arange(round(length * rate)) / rate
        x = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)
        soundfile.write(str(folder / f"tone{i}.wav"), np.repeat(x[:, None], channels, axis=1), rate)
    return folder


def _overlap(a, b) -> bool:
    return a.offset < b.offset + b.length and b.offset < a.offset + a.length


def _ramp_source(lengths) -> MemoryAudio:
    """A source whose sample values are their own positions, to trace where crops come from."""
    total = sum(lengths)
    items, offset = [], 0
    for i, length in enumerate(lengths):
        items.append(Item(f"f{i}", offset, length))
        offset += length
    return MemoryAudio(np.arange(1, total + 1, dtype=np.float32)[None], items, SR)


@pytest.mark.parametrize("lengths", [[50_000], [30_000, 5_000], [3_000] * 40, [100, 90_000, 7_000, 2_000]],
                         ids=["one-file", "two-files", "many-files", "mixed"])
def test_split_is_deterministic_disjoint_and_complete(lengths):
    items = _ramp_source(lengths).items
    train, val = split_items(items, 0.1, seed=5)
    assert (train, val) == split_items(list(reversed(items)), 0.1, seed=5)
    assert val and train
    assert not any(_overlap(a, b) for a in train for b in val)
    covered = sorted((s.offset, s.offset + s.length) for s in train + val)
    assert covered[0][0] == 0 and covered[-1][1] == sum(lengths)
    assert all(end == start for (_, end), (start, _) in zip(covered, covered[1:]))
    val_frames = sum(s.length for s in val)
    assert 0.05 * sum(lengths) <= val_frames <= 0.1 * sum(lengths) + 1


def test_split_by_whole_files_when_there_are_enough_and_seed_changes_it():
    items = _ramp_source([3_000] * 40).items
    splits = [split_items(items, 0.1, seed)[1] for seed in range(3)]
    assert all(len(val) == 4 and all(s.length == 3_000 for s in val) for val in splits)
    assert len({tuple(val) for val in splits}) == 3


def test_training_crops_never_touch_validation_audio():
    source = _ramp_source([20_000, 3_000, 9_000])
    train, val = split_items(source.items, 0.2, seed=0)
    val_positions = {int(p) for s in val for p in range(s.offset + 1, s.offset + s.length + 1)}
    crops = RandomCrops(source, train, N, length=50)
    for seed in range(50):
        crop = crops[seed]
        assert crop.shape == (1, N) and crop.dtype == torch.float32
        assert not val_positions & set(crop[0].long().tolist())
    for crop in FixedCrops(source, val, N, max_items=64):
        assert set(crop[0].long().tolist()) - {0} <= val_positions


def test_crop_seed_sampler_differs_per_epoch_and_is_reproducible():
    sampler = CropSeedSampler(6, seed=1)
    first, second = list(sampler), list(sampler)
    assert len(first) == 6 and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_store_mode_yields_batches_and_a_deterministic_validation_split(tmp_path):
    preprocess([_write_tones(tmp_path / "in", rate=16000)], tmp_path / "db", SR, progress=False)
    data = AudioDataModule(str(tmp_path / "db"), SR, 1, N, batch_size=4, val_fraction=0.2)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (4, 1, N) and batch.dtype == torch.float32 and batch.abs().max() > 0.1
    assert len(data.train_dataset) == max(sum(s.length for s in data.train_dataset.stream.segments) // N, 4)
    val = torch.cat(list(data.val_dataloader()))
    assert val.shape[1:] == (1, N) and len(val) >= 1
    again = AudioDataModule(str(tmp_path / "db"), SR, 1, N, batch_size=4, val_fraction=0.2)
    again.setup("fit")
    assert torch.equal(val, torch.cat(list(again.val_dataloader())))
    assert not any(_overlap(a, b) for a in data.train_dataset.stream.segments for b in data.val_dataset.stream.segments)
    restored = pickle.loads(pickle.dumps(data.train_dataset))  # as spawned workers get it: no audio copied
    assert restored.stream.source._audio is None and torch.equal(restored[7], data.train_dataset[7])


def test_workers_load_the_same_crops_as_the_main_process(tmp_path):
    kwargs = dict(path=str(_write_tones(tmp_path / "in")), sample_rate=SR, n_signal=N, batch_size=2,
                  augmentations=[RandomGain(probability=0.5)])
    batches = []
    for workers in (0, 2):
        data = AudioDataModule(num_workers=workers, **kwargs)
        data.setup("fit")
        batches.append(torch.cat(list(data.train_dataloader())))
    assert torch.equal(*batches)
    assert len({tuple(crop[0, :8].tolist()) for crop in batches[0]}) == len(batches[0]), "crops should differ"


@pytest.mark.parametrize("what, value, option", [("sample_rate", 16000, "--sample-rate 16000"),
                                                  ("channels", 2, "--channels 2")])
def test_store_mismatch_says_both_values_and_the_fix(tmp_path, what, value, option):
    preprocess([_write_tones(tmp_path / "in")], tmp_path / "db", SR, progress=False)
    data = AudioDataModule(str(tmp_path / "db"), n_signal=N, **{"sample_rate": SR, "channels": 1, what: value})
    stored = {"sample_rate": SR, "channels": 1}[what]
    with pytest.raises(UserError, match=f"store has {what}={stored} but the model expects {what}={value}.*{option}"):
        data.setup("fit")


def test_raw_folder_mode_decodes_resamples_and_skips_bad_files(tmp_path):
    folder = _write_tones(tmp_path / "in", seconds=(1.0, 0.5), rate=16000, channels=2)
    (folder / "bad.ogg").write_bytes(b"OggS nonsense")
    data = AudioDataModule(str(folder), SR, channels=1, n_signal=512, batch_size=2)
    with pytest.warns(UserWarning, match="skipped 1 files: bad.ogg: cannot decode"):
        data.setup("fit")
    assert isinstance(data.source, MemoryAudio)
    assert [item.length for item in data.source.items] == [SR, SR // 2]
    assert next(iter(data.train_dataloader())).shape == (2, 1, 512)


def test_lazy_folder_reads_equal_in_memory_reads(tmp_path):
    folder = _write_tones(tmp_path / "in", seconds=(0.9, 0.4), rate=22050, channels=2)
    _write_tones(folder / "native", seconds=(0.3,), rate=SR, channels=1)
    memory = open_audio_folder(folder, SR, 2)
    lazy = open_audio_folder(folder, SR, 2, max_cache_mb=0)
    assert isinstance(lazy, LazyAudioFiles) and lazy.items == memory.items
    assert [item.name for item in lazy.items] == ["native/tone0.wav", "tone0.wav", "tone1.wav"]
    resampled = lazy.items[1].offset
    # 22050 -> 8000 Hz works in blocks of 160 output frames: test block starts and file boundaries.
    for offset in (0, 2000, resampled + 1, resampled + 700, resampled + 1600, resampled + 7000, lazy.total - 5):
        np.testing.assert_allclose(lazy.read(offset, 600), memory.read(offset, 600), atol=1e-5, err_msg=str(offset))


def test_short_audio_is_padded_with_a_warning(tmp_path):
    soundfile.write(str(tmp_path / "tiny.wav"), np.full(300, 0.5, np.float32), SR)
    data = AudioDataModule(str(tmp_path / "tiny.wav"), SR, n_signal=N, batch_size=2)
    with pytest.warns(UserWarning, match="shorter than one crop") as record:
        data.setup("fit")
    assert any("training audio" in str(w.message) for w in record)
    batch = next(iter(data.train_dataloader()))
    assert batch.shape == (2, 1, N)
    assert torch.allclose(batch[:, 0, :200], torch.tensor(0.5), atol=1e-4) and (batch[:, 0, 300:] == 0).all()
    assert next(iter(data.val_dataloader())).shape == (1, 1, N)


def test_builtin_demo_mode():
    data = AudioDataModule("builtin:demo", SR, channels=2, n_signal=2048, batch_size=3, demo_seconds=25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 10 s items are longer than a crop: no warning
        data.setup("fit")
    assert next(iter(data.train_dataloader())).shape == (3, 2, 2048)
    val = torch.cat(list(data.val_dataloader()))
    assert val.shape[1:] == (2, 2048) and len(val) >= 1 and val.abs().max() > 0


def test_augmentations_apply_to_training_crops_only(tmp_path):
    data = AudioDataModule(str(_write_tones(tmp_path / "in")), SR, n_signal=N, batch_size=2,
                           augmentations=[Mute(probability=1.0)])
    data.setup("fit")
    assert (next(iter(data.train_dataloader())) == 0).all()
    assert next(iter(data.val_dataloader())).abs().max() > 0.1


@pytest.mark.parametrize("path, message", [("nowhere", "'nowhere' does not exist"),
                                           ("empty", "empty: no readable audio"),
                                           ("junk", "junk: no readable audio: 1 audio files, none readable"),
                                           ("builtin:nothing", "unknown data path 'builtin:nothing'")])
def test_unusable_paths_are_user_errors_naming_the_path(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_text("nope")
    with pytest.raises(UserError, match=message):
        AudioDataModule(path, SR, n_signal=N).setup("fit")


def test_a_folder_of_silence_is_refused_and_clipped_files_are_named(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    soundfile.write(str(folder / "zeros.wav"), np.zeros(4 * N, np.float32), SR, subtype="FLOAT")
    with pytest.raises(UserError, match="no readable audio: .*zeros.wav: digital silence"):
        open_audio_folder(folder, SR, 1)
    soundfile.write(str(folder / "hot.wav"), np.full(4 * N, 100.0, np.float32), SR, subtype="FLOAT")
    with pytest.warns(UserWarning) as caught:
        source = open_audio_folder(folder, SR, 1)
    messages = [str(w.message) for w in caught]
    assert [item.name for item in source.items] == ["hot.wav"] and source.read(0, 8).max() == 1.0
    assert any("hot.wav: 100.0 % of samples beyond full scale (peak 100)" in m for m in messages)
    assert any("skipped 1 files: zeros.wav: digital silence" in m for m in messages)


@pytest.mark.parametrize("kwargs", [{"val_fraction": 0.0}, {"val_fraction": 0.9}, {"n_signal": 0}, {"batch_size": 0}],
                         ids=["val0", "val-big", "n_signal", "batch"])
def test_bad_settings_are_user_errors(kwargs):
    with pytest.raises(UserError, match=f"data.{next(iter(kwargs))}"):
        AudioDataModule(**kwargs)


def test_jsonargparse_reads_the_constructor_and_augmentations():
    parser = ArgumentParser()
    parser.add_class_arguments(AudioDataModule, "data")
    config = parser.parse_string("""
data:
  path: builtin:demo
  n_signal: 2048
  augmentations:
    - class_path: rave_ddsp.data.augment.RandomGain
      init_args: {min_db: -6.0, probability: 0.5}
    - class_path: rave_ddsp.data.augment.Compress
      init_args: {threshold_db: [-24.0, -12.0]}
""")
    data = parser.instantiate(config).data
    assert isinstance(data, AudioDataModule) and data.n_signal == 2048
    gain, compress = data.augmentations
    assert (gain.min_db, gain.probability) == (-6.0, 0.5) and compress.threshold_db == (-24.0, -12.0)
