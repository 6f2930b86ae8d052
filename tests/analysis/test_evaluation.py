"""scripts/evaluate.py and rave_ddsp.analysis.evaluation: known answers with stand-in models, then the real thing."""
import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from rave_ddsp.analysis import evaluation
from rave_ddsp.analysis.evaluation import evaluate, markdown, parameter_count, write_report
from rave_ddsp.runtime.export import build, load_model
from rave_ddsp.runtime.inference import load
from rave_ddsp.analysis.metrics import mean_and_ci95
from helpers import run_script, write_tone

RATE = 16000
GAIN_DB = 20 * math.log10(2)  # 6.02 dB


class StandIn:
    """An AutoEncoder-like model: the latent is the audio itself (hop 1), decoding applies ``transform``."""

    def __init__(self, transform=lambda z: z, name="stand_in.ts"):
        self.sample_rate, self.channels, self.hop_length, self.latent_size = RATE, 1, 1, 1
        self.frame_rate = float(RATE)
        self.module = torch.nn.Linear(3, 2)  # 8 parameters
        self.source, self.device, self.transform = Path(name), torch.device("cpu"), transform

    def pad(self, audio):
        return audio

    def encode(self, audio):
        return audio.clone()

    def decode(self, latent):
        return self.transform(latent)


class NoiseGain(torch.nn.Module):
    """The noise_level interface of rave_ddsp.runtime.export.ExportedModel: an attribute with set_/get_ methods."""

    def __init__(self):
        super().__init__()
        self.noise_level = 1.0

    def set_noise_level(self, value):
        self.noise_level = value
        return 0

    def get_noise_level(self):
        return [self.noise_level]


class NoisyStandIn(StandIn):
    """Decodes to the audio plus ``noise_level`` times white noise orthogonal to it, of ``share_db`` of the
    output's energy at level 1; the noise-free decode takes ``untimed_delay`` seconds."""

    def __init__(self, share_db, name="noisy.ts", untimed_delay=0.0):
        super().__init__(name=name)
        self.module, self.share_db, self.untimed_delay = NoiseGain(), share_db, untimed_delay

    def decode(self, latent):  # [B, C, T]
        if self.module.noise_level == 0:
            time.sleep(self.untimed_delay)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        energy = latent.pow(2).sum(dim=(1, 2), keepdim=True)  # [B, 1, 1]
        noise = noise - (noise * latent).sum(dim=(1, 2), keepdim=True) / energy * latent  # orthogonal to the audio
        ratio = 10 ** (self.share_db / 10)  # E_noise / (E_audio + E_noise)
        noise = noise * (energy * ratio / (1 - ratio) / noise.pow(2).sum(dim=(1, 2), keepdim=True)).sqrt()
        return latent + self.module.noise_level * noise


def sine_of(frequency):
    """A transform that replaces the audio by a sine at ``frequency`` (same shape)."""
    return lambda z: 0.5 * torch.sin(2 * math.pi * frequency * torch.arange(z.shape[-1]) / RATE).expand_as(z).clone()


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
    """Four files of white noise at different levels (every mel band far above DAC's 1e-5 floor)."""
    folder = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for i, level in enumerate((0.05, 0.1, 0.2, 0.4)):
        soundfile.write(str(folder / f"noise{i}.wav"), level * rng.standard_normal(RATE // 2), RATE, subtype="FLOAT")
    return folder


def scores(model_report, key):
    return [row[key] for row in model_report["files"]]


def test_gain_and_identity_give_known_distances(noise_folder):
    report = evaluate([StandIn(lambda z: 2 * z, "gain.ts"), StandIn(name="identity.ts")], noise_folder,
                      pitch=False, progress=False)
    gain, identity = report["models"]
    for row in gain["files"]:
        assert row["loudness_l1_db"] == pytest.approx(GAIN_DB, abs=1e-3)
        assert row["mel_distance"] == pytest.approx(7 * math.log10(2), abs=1e-3)  # 7 scales of |log10 2|
        assert row["multiscale_stft"] == pytest.approx(1 + math.log(2), abs=1e-3)  # convergence 1 + |ln 2|
        assert row["si_sdr_db"] == pytest.approx(120, abs=0.1)  # scale-invariant: the cap
    for row in identity["files"]:
        assert row["loudness_l1_db"] == row["mel_distance"] == row["multiscale_stft"] == 0
    assert gain["aggregate"]["loudness_l1_db"]["mean"] == pytest.approx(GAIN_DB, abs=1e-3)
    assert gain["aggregate"]["loudness_l1_db"]["n"] == 4 and gain["parameters"] == 8
    assert gain["kind"] == "torchscript" and gain["sample_rate"] == RATE and math.isfinite(gain["realtime_factor"])
    lines = markdown(report).splitlines()
    assert "| metric | gain.ts | identity.ts |" in lines
    assert any(line.startswith("| loudness L1 (dB) ↓ | 6.02 ± 0.00 | 0.00 ± 0.00 |") for line in lines)


def test_aggregates_are_mean_and_ci95_of_the_files(noise_folder):
    torch.manual_seed(0)
    hiss = 0.05 * torch.randn(2 * RATE)  # longer than the 2 s of silence evaluate also reconstructs
    report = evaluate([StandIn(lambda z: z + hiss[: z.shape[-1]])], noise_folder, pitch=False, progress=False)
    model = report["models"][0]
    assert len(set(scores(model, "si_sdr_db"))) == 4  # the files differ, so the interval is not trivial
    for key, statistic in model["aggregate"].items():
        expected = mean_and_ci95(scores(model, key))
        assert (statistic["mean"], statistic["ci95"], statistic["n"]) == pytest.approx(tuple(expected),
                                                                                      nan_ok=True), key


def test_pitch_errors_of_known_shifts(tmp_path):
    for name in ("a", "b"):
        write_tone(tmp_path / f"{name}.wav", 0.3, RATE, frequency=440.0)
    up_semitone, up_two_octaves = 440 * 2 ** (1 / 12), 4 * 440
    report = evaluate([StandIn(sine_of(up_semitone), "semitone.ts"), StandIn(sine_of(up_two_octaves), "octaves.ts")],
                      tmp_path, crepe_model="tiny", interpolation=True, progress=False)  # F0 by default
    semitone, octaves = report["models"]
    for row in semitone["files"]:
        assert row["f0_l1_cents"] == pytest.approx(100, abs=20) and row["f0_outlier"] == 0
        assert row["f0_rmse_cents"] >= row["f0_l1_cents"] and row["f0_voiced_frames"] > 20
    assert octaves["aggregate"]["f0_l1_cents"]["mean"] == pytest.approx(2400, abs=40)
    assert octaves["aggregate"]["f0_outlier"]["mean"] == 1.0
    assert octaves["aggregate"]["f0_pitched"]["mean"] > 0.9  # a wrong pitch, but a pitch
    assert "f0_l1_cents" in report["settings"]["recipes"] and "F0 outlier ratio ↓" in markdown(report)
    assert "F0: output pitched where the input is ↑" in markdown(report)
    assert report["settings"]["pitch"] and report["settings"]["f0_not_computed"] is None
    for row in semitone["interpolation"]["per_pair"]:  # the output ignores the mix: a semitone above A and B
        assert row["f0_l1_cents_vs_a"] == pytest.approx(100, abs=20)
        assert row["f0_share_b"] == pytest.approx(0.5, abs=0.05)


def test_realtime_factor_is_timed_on_one_thread(noise_folder):
    threads = []

    def slow(z):
        threads.append(torch.get_num_threads())
        time.sleep(0.1)
        return z

    before = torch.get_num_threads()
    model = evaluate([StandIn(slow)], noise_folder, pitch=False, max_files=2, progress=False)["models"][0]
    assert threads[-2:] == [1, 1] and torch.get_num_threads() == before  # the two timed calls
    assert 0.2 <= model["realtime_factor"] < 0.2 + 0.5  # 0.1 s per 0.5 s file, plus overhead
    assert model["audio_seconds"] == 1.0 and len(model["files"]) == 2


@pytest.mark.parametrize("share_db", [-20.0, -3.0], ids=["-20dB", "-3dB"])
def test_noise_share_and_ablation_of_a_known_mixture(noise_folder, share_db):
    noisy_model = NoisyStandIn(share_db, untimed_delay=0.2)
    report = evaluate([noisy_model, StandIn(name="official_rave.ts")], noise_folder, pitch=False, progress=False)
    noisy, plain = report["models"]
    for row in noisy["files"]:
        assert row["noise_share_db"] == pytest.approx(share_db, abs=0.01)
        assert row["mel_distance"] > 0.01 and row["mel_distance_no_noise"] == 0  # noise off: the audio itself
    assert noisy["aggregate"]["noise_share_db"]["mean"] == pytest.approx(share_db, abs=0.01)
    assert noisy["mel_distance_no_noise_change_pct"] == pytest.approx(-100)
    assert noisy_model.module.noise_level == 1.0 and noisy["noise_level"] == 1.0  # restored after the ablation
    assert noisy["realtime_factor"] < 0.3  # 0.5 s files: the noise-free decodes (0.2 s each) are not timed
    assert all(row["noise_share_db"] is None and row["mel_distance_no_noise"] is None for row in plain["files"])
    assert plain["noise_level"] is None and math.isnan(plain["mel_distance_no_noise_change_pct"])
    lines = markdown(report).splitlines()
    assert f"| noise branch energy share (dB) | {share_db:.2f} ± 0.00 | - |" in lines
    assert "| mel distance change, noise off (%) | -100.0 | - |" in lines


def test_output_for_digital_silence_is_reported(noise_folder):
    hum = StandIn(lambda z: z + 0.01 * torch.sin(2 * math.pi * 440 * torch.arange(z.shape[-1]) / RATE), "hum.ts")
    report = evaluate([hum, StandIn()], noise_folder, pitch=False, max_files=1, progress=False)
    humming, plain = report["models"]
    assert humming["silence_db"] == pytest.approx(20 * math.log10(0.01 / math.sqrt(2)), abs=0.01)  # -43.0 dB
    assert plain["silence_db"] == -200.0
    lines = markdown(report).splitlines()
    assert "| output for 2 s of digital silence (dB RMS) ↓ | -43.0 | -200.0 |" in lines
    assert any(line.startswith("- output for digital silence: 2 s of zeros") for line in lines)


def test_no_noise_gives_the_share_floor(noise_folder):
    model = NoisyStandIn(-20.0)
    model.module.noise_level = 0.0
    silent = evaluate([model], noise_folder, pitch=False, max_files=1, progress=False)["models"][0]
    assert silent["files"][0]["noise_share_db"] == -200 and silent["noise_level"] == 0.0
    assert math.isnan(silent["mel_distance_no_noise_change_pct"])  # no change of a perfect score: no ratio


def test_pitch_is_skipped_and_said_so_without_torchcrepe(noise_folder, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "torchcrepe"
                        else find_spec(name, *args))
    report = evaluate([StandIn()], noise_folder, max_files=1, progress=False)
    reason = "torchcrepe not installed (pip install 'rave_ddsp[pitch]')"
    assert not report["settings"]["pitch"] and report["settings"]["f0_not_computed"] == reason
    assert not any(key.startswith("f0") for key in [*report["models"][0]["files"][0], *report["settings"]["recipes"]])
    assert f"F0 not computed: {reason}." in markdown(report).splitlines()


def test_interpolation_report(noise_folder, tmp_path):
    report = evaluate([StandIn(lambda z: 2 * z, "gain.ts"), StandIn(name="identity.ts")], noise_folder,
                      pitch=False, interpolation=True, progress=False)
    gain, identity = (model["interpolation"] for model in report["models"])
    assert gain["pairs"] == [["noise0.wav", "noise2.wav"], ["noise1.wav", "noise3.wav"]]
    assert len(gain["per_pair"]) == 6 and set(gain["aggregate"]) == {"0.0", "0.5", "1.0"}
    keys = {"loudness_l1_db_vs_a", "loudness_l1_db_vs_b", "loudness_share_b"}
    assert all(set(statistics) == keys for statistics in gain["aggregate"].values())
    assert gain["aggregate"]["0.0"]["loudness_l1_db_vs_a"]["mean"] == pytest.approx(GAIN_DB, abs=1e-3)
    assert gain["aggregate"]["1.0"]["loudness_l1_db_vs_b"]["mean"] == pytest.approx(GAIN_DB, abs=1e-3)
    shares = [identity["aggregate"][a]["loudness_share_b"]["mean"] for a in ("0.0", "0.5", "1.0")]
    assert shares[0] == 0 and 0 < shares[1] < 1 and shares[2] == 1  # A itself, a mix, B itself
    json_path, markdown_path = write_report(report, tmp_path / "out" / "report.json")
    text = markdown_path.read_text()
    assert markdown_path == tmp_path / "out" / "report.md"
    assert "## Interpolation: gain.ts" in text and "## Interpolation: identity.ts" in text
    assert json.loads(json_path.read_text())["models"][0]["interpolation"]["weights"] == [0.0, 0.5, 1.0]


def test_evaluate_script_compares_a_checkpoint_and_its_export(tiny_run, tmp_path, capsys):
    models = tiny_run
    data = tmp_path / "data"
    for i, frequency in enumerate((220.0, 330.0, 440.0)):
        write_tone(data / f"tone{i}.wav", 0.4, 22050, frequency=frequency)
    (data / "broken.flac").write_bytes(b"fLaC garbage")
    output = tmp_path / "report.json"
    code, out = run_script("evaluate", ["--model", models["checkpoint"], "--compare", models["torchscript"], "--data",
                                        data, "--output", output, "--interpolation", "--crepe-model", "tiny",
                                        "--quiet"], capsys)
    assert code == 0, out.err
    report = json.loads(output.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    checkpoint, export = report["models"]
    assert [checkpoint["kind"], export["kind"]] == ["checkpoint", "torchscript"]
    for model in report["models"]:
        assert [row["file"] for row in model["files"]] == ["tone0.wav", "tone1.wav", "tone2.wav"]
        assert model["skipped"][0]["file"] == "broken.flac" and "cannot decode" in model["skipped"][0]["reason"]
        assert all(math.isfinite(v) for key in evaluation.LABELS if key in model["aggregate"]
                   for v in (model["aggregate"][key]["mean"], model["aggregate"][key]["ci95"]))
        assert model["interpolation"]["pairs"] == [["tone0.wav", "tone1.wav"]]
        assert {"f0_l1_cents", "noise_share_db", "mel_distance_no_noise"} <= set(model["aggregate"])  # F0 by default
        assert -60 < model["aggregate"]["noise_share_db"]["mean"] < 0 and model["noise_level"] == 1.0
        assert model["aggregate"]["mel_distance_no_noise"]["mean"] != model["aggregate"]["mel_distance"]["mean"]
    for key in ("mel_distance", "loudness_l1_db", "noise_share_db", "mel_distance_no_noise"):  # checkpoint and .ts
        assert checkpoint["aggregate"][key]["mean"] == pytest.approx(export["aggregate"][key]["mean"], rel=1e-4)
    eager = build(load_model(models["checkpoint"], streaming=False), 6, script=False)
    expected = sum(p.numel() for p in [*eager.encoder.parameters(), *eager.decoder.parameters()])
    assert checkpoint["parameters"] == export["parameters"] == expected
    assert parameter_count(load(models["torchscript"])) == expected
    table = output.with_suffix(".md").read_text()
    assert f"| metric | {models['checkpoint']} | {models['torchscript']} |" in table and table in out.out
    assert "| mel distance change, noise off (%) |" in table and "F0 not computed" not in table
    assert report["machine"]["torch"] == torch.__version__ and report["settings"]["files"] == 4


def test_no_pitch_skips_f0_and_says_so(tiny_run, tmp_path, capsys):
    write_tone(tmp_path / "data" / "tone.wav", 0.2, RATE)
    output = tmp_path / "report.json"
    code, out = run_script("evaluate", ["--model", tiny_run["torchscript"], "--data", tmp_path / "data", "--output",
                                        output, "--no-pitch", "--quiet"], capsys)
    assert code == 0, out.err
    report = json.loads(output.read_text())
    assert not report["settings"]["pitch"] and report["settings"]["f0_not_computed"] == "--no-pitch"
    assert not any(key.startswith("f0") for key in report["models"][0]["aggregate"])
    assert "F0 not computed: --no-pitch." in out.out.splitlines()


def test_bad_input_fails_clearly_and_writes_no_report(tiny_run, tmp_path, capsys):
    models = tiny_run
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir()
    broken.mkdir()
    (broken / "x.wav").write_bytes(b"nothing")
    write_tone(broken / "tiny.wav", 0.01, RATE)
    output = tmp_path / "out" / "report.json"
    cases = [
        (["--data", tmp_path / "missing"], "no such folder"),
        (["--data", empty], "no audio files in this folder"),
        (["--data", broken], "tiny.wav: 160 samples at 16000 Hz; scoring needs at least 1025"),
        (["--data", broken, "--max-files", "0"], "--max-files 0: expected at least 1"),
        (["--data", empty, "--model", tmp_path / "nope.ts"], "no such exported model"),
        (["--data", empty, "--output", tmp_path / "report.txt"], "expected a .json file"),
    ]
    for args, message in cases:
        if "--model" not in args:
            args = [*args, "--model", models["torchscript"]]
        code, out = run_script("evaluate", ["--output", output, *args, "--quiet"], capsys)
        assert code == 2 and message in out.err and "Traceback" not in out.err, out.err
        assert not output.parent.exists() and not (tmp_path / "report.txt").exists()
