import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from helpers import ROOT
from rave_ddsp.data import corpus
from rave_ddsp.data.store import AUDIO_FILE, INDEX_FILE, AudioStore, preprocess
from rave_ddsp.errors import UserError

SR = 8000
HAS_MP3 = "MP3" in soundfile.available_formats()


def _tone(rate: int, seconds: float, channels: int, hz: float = 330.0) -> np.ndarray:
    """``[T, C]`` float32: a tone, a different gain per channel."""
    t = np.arange(round(rate * seconds)) / rate
    return np.stack([0.5 / (c + 1) * np.sin(2 * np.pi * hz * t) for c in range(channels)], axis=1).astype(np.float32)


# name -> (sample rate, channels, soundfile options)
FILES = {
    "a.wav": (16000, 2, {"subtype": "FLOAT"}),
    "sub/b.flac": (11025, 1, {}),
    "sub/deeper/c.ogg": (SR, 1, {}),
    "d.aiff": (22050, 2, {}),
    "three.wav": (SR, 3, {}),
    "short.wav": (SR, 1, {}),
    "g.opus": (16000, 1, {"format": "OGG", "subtype": "OPUS"}),
    "h.aif": (SR, 2, {"format": "AIFF"}),
    "UPPER.WAV": (SR, 1, {}),
    **({"e.mp3": (44100, 1, {})} if HAS_MP3 else {}),
}


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for name, (rate, channels, options) in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        seconds = 10 / rate if name == "short.wav" else 0.3
        soundfile.write(str(folder / name), _tone(rate, seconds, channels), rate, **options)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really a wav file")
    (folder / "notes.txt").write_text("not audio")
    return folder


def _expected(path: Path, channels: int) -> np.ndarray:
    """What the store should hold for ``path``: decoded, channel-converted, resampled, ``[C, T]``."""
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if channels == 1:
        x = data.T.mean(axis=0, keepdims=True)
    else:
        x = np.repeat(data.T, channels // data.shape[1], axis=0)
    return torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x)), rate, SR).numpy()


@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_matches_the_resampled_input(audio_folder, tmp_path, channels):
    summary = preprocess([audio_folder], tmp_path / "db", SR, channels, progress=False)
    store = AudioStore(tmp_path / "db")
    assert (store.sample_rate, store.channels) == (SR, channels)
    expected_names = sorted(n for n in FILES if channels == 1 or n != "three.wav")
    assert sorted(item.name for item in store.items) == expected_names
    assert [item.name for item in summary.items] == [item.name for item in store.items]
    for item in store.items:
        expected = _expected(audio_folder / item.name, channels)
        assert item.length == expected.shape[1], item.name
        np.testing.assert_allclose(store.read(item.offset, item.length), expected, atol=1.01 / 32767, err_msg=item.name)
    skipped = dict(summary.skipped)
    assert "cannot decode audio" in skipped["corrupt.wav"]
    assert ("three.wav" in skipped) == (channels == 2)
    if channels == 2:
        assert "has 3 channels, expected 1 or 2" in skipped["three.wav"]
    assert "notes.txt" not in skipped  # files without an audio extension are not audio
    text = str(summary)
    assert f"files read: {len(expected_names)}" in text and f"files skipped: {len(skipped)}" in text
    assert "corrupt.wav: cannot decode audio" in text and f"total {store.total / SR:.1f} s" in text


def test_store_layout_is_interleaved_int16_with_an_index(tmp_path):
    soundfile.write(str(tmp_path / "lr.wav"), np.array([[0.5, -0.25]] * 10, np.float32), SR)
    preprocess([tmp_path / "lr.wav"], tmp_path / "db", SR, channels=2, progress=False)
    frames = np.fromfile(tmp_path / "db" / AUDIO_FILE, "<i2").reshape(-1, 2)  # [T, C]
    assert (frames == [round(0.5 * 32767), round(-0.25 * 32767)]).all()
    index = json.loads((tmp_path / "db" / INDEX_FILE).read_text())
    assert index["format"] == "rave_ddsp.store" and index["version"] == 1
    assert (index["sample_rate"], index["channels"], index["dtype"], index["layout"]) == (SR, 2, "int16", "interleaved")
    assert index["total_samples"] == 10 and index["items"] == [{"name": "lr.wav", "offset": 0, "length": 10}]


def test_float_audio_beyond_full_scale_is_clipped_and_counted(tmp_path):
    x = np.array([0.5, 1.5, -2.0, 0.25, 1.0], np.float32)
    soundfile.write(str(tmp_path / "hot.wav"), x, SR, subtype="FLOAT")
    summary = preprocess([tmp_path / "hot.wav"], tmp_path / "db", SR, progress=False)
    assert summary.clipped == (("hot.wav", 2, 40.0, 2.0),)
    assert "samples clipped to [-1, 1]: 2 in hot.wav (2, 40.0 %, peak 2)" in str(summary)
    np.testing.assert_allclose(AudioStore(tmp_path / "db").read(0, 5)[0], np.clip(x, -1, 1), atol=1 / 32767)


def test_digital_silence_is_skipped_and_only_silence_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    soundfile.write(str(tmp_path / "in" / "zeros.wav"), np.zeros(100, np.float32), SR, subtype="FLOAT")
    soundfile.write(str(tmp_path / "in" / "hiss.wav"), np.full(100, 1e-6, np.float32), SR, subtype="FLOAT")
    with pytest.raises(UserError, match=r"hiss.wav: digital silence .*zeros.wav: digital silence"):
        preprocess([tmp_path / "in"], tmp_path / "db", SR, progress=False)
    assert not (tmp_path / "db").exists()
    soundfile.write(str(tmp_path / "in" / "tone.wav"), np.full(100, 0.5, np.float32), SR, subtype="FLOAT")
    summary = preprocess([tmp_path / "in"], tmp_path / "db", SR, progress=False)
    assert [item.name for item in summary.items] == ["tone.wav"]
    assert [name for name, _ in summary.skipped] == ["hiss.wav", "zeros.wav"]


def test_cli_warns_about_clipped_files_with_their_figures(cli, tmp_path, capsys):
    x = np.linspace(-100, 100, 1000, dtype=np.float32)  # 99 % beyond full scale, peak 100
    soundfile.write(str(tmp_path / "loud.wav"), x, SR, subtype="FLOAT")
    assert cli([str(tmp_path / "loud.wav"), "--output", str(tmp_path / "db"), "--sample-rate", str(SR), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: loud.wav: 99.0 % of samples beyond full scale (peak 100), clipped to [-1, 1]" in err


def test_cli_ctrl_c_says_so_and_leaves_nothing(cli, audio_folder, tmp_path, capsys, monkeypatch):
    import rave_ddsp.data.store as store

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(store, "to_pcm", interrupted)  # the first file is being written when Ctrl-C comes
    assert cli([str(audio_folder), "--output", str(tmp_path / "db"), "--sample-rate", str(SR), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: no store was written") and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_existing_outputs_are_protected(audio_folder, tmp_path):
    db = tmp_path / "db"
    preprocess([audio_folder / "d.aiff"], db, SR, progress=False)
    with pytest.raises(UserError, match="already holds a store; pass --overwrite"):
        preprocess([audio_folder], db, SR, progress=False)
    preprocess([audio_folder / "sub"], db, SR, overwrite=True, progress=False)
    assert [item.name for item in AudioStore(db).items] == ["b.flac", "deeper/c.ogg"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no store"):
        preprocess([audio_folder], other, SR, overwrite=True, progress=False)
    assert [p.name for p in other.iterdir()] == ["keep.txt"]
    with pytest.raises(UserError, match="is a file"):
        preprocess([audio_folder], other / "keep.txt", SR, progress=False)
    (tmp_path / "empty").mkdir()
    preprocess([audio_folder / "d.aiff"], tmp_path / "empty", SR, progress=False)
    assert (tmp_path / "empty" / INDEX_FILE).is_file()


def test_no_readable_audio_is_an_error_and_leaves_nothing(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.flac").write_bytes(b"fLaC garbage")
    with pytest.raises(UserError, match=r"no readable audio in .*in: broken.flac: cannot decode audio"):
        preprocess([tmp_path / "in"], tmp_path / "out" / "db", SR, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_input_is_an_error(tmp_path):
    with pytest.raises(UserError, match="nowhere: no such file or folder"):
        preprocess([tmp_path / "nowhere"], tmp_path / "db", SR, progress=False)
    assert not (tmp_path / "db").exists()


@pytest.fixture(scope="module")
def cli():
    path = ROOT / "scripts" / "preprocess.py"
    spec = importlib.util.spec_from_file_location("preprocess_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_reports_user_errors_with_exit_code_2(cli, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for inputs, expected in (([str(tmp_path / "missing")], "missing: no such file or folder"),
                             ([str(tmp_path / "empty")], "no readable audio in")):
        assert cli([*inputs, "--output", str(tmp_path / "db"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "db").exists()


def test_cli_prints_the_summary(cli, audio_folder, tmp_path, capsys):
    args = [str(audio_folder), "--output", str(tmp_path / "db"), "--sample-rate", str(SR), "--quiet"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert f"store: {tmp_path / 'db'} ({SR} Hz, 1 channel(s))" in out and "corrupt.wav: cannot decode" in out
    assert cli(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli([*args, "--overwrite"]) == 0


def test_demo_corpus_files_round_trip_through_preprocess(tmp_path):
    corpus.write_demo_corpus(tmp_path / "demo", SR, channels=1, seconds=12)
    summary = preprocess([tmp_path / "demo"], tmp_path / "db", SR, progress=False)
    assert [item.name for item in summary.items] == ["demo_000.flac", "demo_001.flac"] and not summary.skipped
    store = AudioStore(tmp_path / "db")
    np.testing.assert_allclose(store.read(0, store.total), corpus.demo_corpus(SR, 1, 12), atol=1.01 / 32767)
