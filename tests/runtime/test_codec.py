"""scripts/encode.py, decode.py, reconstruct.py and the windowed codec behind them (rave_ddsp.runtime.codec)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import yaml

from rave_ddsp.data.audio import load_audio
from rave_ddsp.errors import UserError
from rave_ddsp.runtime.codec import MARGIN_FRAMES, Codec, plan_windows
from rave_ddsp.runtime.export import build
from rave_ddsp.runtime.inference import load
from rave_ddsp.train.model import RAVE
from helpers import ROOT, run_script, write_tone

HOP, RATE, LATENT = 32, 16000, 6  # the tiny test model (helpers.TINY)
KINDS = ["checkpoint", "torchscript"]


@pytest.fixture(scope="module")
def models(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def loaded(models):
    return {kind: load(path) for kind, path in models.items()}


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    """A long mono 44.1 kHz wav, a short stereo 22.05 kHz flac in a subfolder, and a broken file."""
    folder = tmp_path_factory.mktemp("audio")
    write_tone(folder / "long.wav", 1.3, 44100)
    write_tone(folder / "sub" / "short.flac", 0.2, 22050, channels=2, frequency=300.0)
    (folder / "broken.wav").write_bytes(b"RIFF but not really")
    return folder


# ------------------------------------------------------------------------ windows --
@pytest.mark.parametrize("frames, window, margin", [(10, 20, 4), (20, 20, 4), (21, 20, 4), (100, 20, 4),
                                                     (101, 30, 8), (1000, 97, 32)],
                         ids=lambda v: str(v))
def test_windows_tile_the_signal_with_margins_away_from_the_edges(frames, window, margin):
    windows = plan_windows(frames, window, margin)
    assert windows[0].keep_start == 0 and windows[-1].keep_stop == frames
    for before, after in zip(windows, windows[1:]):
        assert before.keep_stop == after.keep_start
    for w in windows:
        assert w.stop - w.start == min(window, frames) and 0 <= w.start and w.stop <= frames
        assert w.start == 0 or w.keep_start - w.start >= margin
        assert w.stop == frames or w.stop - w.keep_stop >= margin


def test_margin_exceeds_the_reach_of_the_demo_config():
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["model"]
    config = {key: value for key, value in config.items() if not key.endswith("_optimizer")}
    torch.manual_seed(0)
    model = build(RAVE(**config).eval(), config["latent_size"], script=False)
    hop, frames, middle = 256, 3 * MARGIN_FRAMES, 3 * MARGIN_FRAMES // 2
    audio, latent = 0.1 * torch.randn(1, 1, frames * hop), torch.randn(1, config["latent_size"], frames)
    with torch.no_grad():
        moved_audio, moved_latent = audio.clone(), latent.clone()
        moved_audio[..., middle * hop:(middle + 1) * hop] += 0.5
        moved_latent[..., middle] += 1.0
        encoder_reach = (model.encode(moved_audio) - model.encode(audio)).abs().amax(dim=1)[0]  # [L]
        decoder_reach = (model.decode(moved_latent) - model.decode(latent)).abs()[0, 0].reshape(frames, hop).amax(1)
    for reach in (encoder_reach, decoder_reach):
        changed = torch.nonzero(reach > 0).flatten()
        assert 0 < len(changed) and (changed - middle).abs().max() < MARGIN_FRAMES


@pytest.mark.parametrize("kind", KINDS)
def test_windowed_encode_and_decode_equal_one_call(loaded, kind):
    model = loaded[kind]
    torch.manual_seed(1)
    audios = [0.3 * torch.randn(1, n) for n in (300 * HOP + 5, 300 * HOP + 5, 40 * HOP, 133 * HOP - 7)]
    codec = Codec(model, batch_seconds=60 / model.frame_rate, margin_frames=16)  # windows of 60 frames
    latents = codec.encode(audios)
    outputs = codec.decode(latents)
    for audio, latent, output in zip(audios, latents, outputs):
        torch.testing.assert_close(latent, model.encode(audio[None])[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(output, model.decode(latent[None])[0], atol=1e-6, rtol=1e-5)
    # the checks can fail: windows without margins, or the noise table not following each window's
    # start (this barely trained model's noise is near -90 dB, hence the small threshold)
    no_margin = Codec(model, batch_seconds=60 / model.frame_rate, margin_frames=0)
    assert (no_margin.encode(audios[:1])[0] - latents[0]).abs().max() > 1e-3
    codec.noise = []
    assert (codec.decode(latents[:1])[0] - outputs[0]).abs().max() > 1e-5


# ------------------------------------------------------------------------ scripts --
@pytest.mark.parametrize("kind", KINDS)
def test_encode_then_decode_scripts(models, loaded, audio_folder, tmp_path, kind, capsys):
    model = loaded[kind]
    latents, decoded = tmp_path / "latents", tmp_path / "decoded"
    code, out = run_script("encode", [audio_folder, "--model", models[kind], "--output", latents,
                                      "--batch-seconds", "0.3", "--quiet"], capsys)
    assert code == 0, out.err
    assert "2 file(s) written" in out.out and "broken.wav: cannot decode audio" in out.out
    assert sorted(p.relative_to(latents).as_posix() for p in latents.rglob("*")) == [
        "long.json", "long.npy", "sub", "sub/short.json", "sub/short.npy"]
    for name, source in (("long", "long.wav"), ("sub/short", "sub/short.flac")):
        audio = torch.from_numpy(load_audio(audio_folder / source, RATE, 1))  # [1, T]
        latent = np.load(latents / f"{name}.npy")
        assert latent.dtype == np.float32 and latent.shape == (LATENT, -(-audio.shape[-1] // HOP))
        torch.testing.assert_close(torch.from_numpy(latent), model.encode(audio[None])[0], atol=1e-5, rtol=1e-4)
        info = json.loads((latents / f"{name}.json").read_text())
        assert info["length"] == audio.shape[-1] and info["pca"] is True
        assert info["source"] == str(audio_folder / source)
        assert (info["sample_rate"], info["hop_length"], info["latent_size"], info["frame_rate"]) == (
            RATE, HOP, LATENT, RATE / HOP)
        assert info["source_sample_rate"] == soundfile.info(str(audio_folder / source)).samplerate
    code, out = run_script("decode", [latents, "--model", models[kind], "--output", decoded, "--format", "flac",
                                      "--quiet"], capsys)
    assert code == 0, out.err
    audio, rate = soundfile.read(str(decoded / "long.flac"), always_2d=True)
    assert rate == RATE and audio.shape == (int(1.3 * RATE), 1)  # cropped to the original length
    expected = model.decode(torch.from_numpy(np.load(latents / "long.npy"))[None])[0, 0, : audio.shape[0]]
    np.testing.assert_allclose(audio[:, 0], expected.clamp(-1, 1).numpy(), atol=2 ** -22)
    assert soundfile.info(str(decoded / "sub" / "short.flac")).frames == int(0.2 * RATE)


def test_reconstruct_script_writes_audio_and_comparison(models, loaded, audio_folder, tmp_path, capsys):
    output = tmp_path / "out"
    code, out = run_script("reconstruct", [audio_folder / "long.wav", audio_folder / "sub", "--model",
                                           models["torchscript"], "--output", output, "--compare", "--quiet"], capsys)
    assert code == 0, out.err
    assert sorted(p.name for p in output.iterdir()) == ["long.png", "long.wav", "short.png", "short.wav"]
    audio, rate = soundfile.read(str(output / "short.wav"), always_2d=True)
    reference = torch.from_numpy(load_audio(audio_folder / "sub" / "short.flac", RATE, 1))
    assert rate == RATE and audio.shape == (reference.shape[-1], 1)
    assert soundfile.info(str(output / "short.wav")).subtype == "FLOAT"
    expected = loaded["torchscript"].reconstruct(reference[None])[0, 0]
    np.testing.assert_allclose(audio[:, 0], expected.numpy(), atol=1e-5)
    assert (output / "long.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_fails_clearly_and_writes_nothing(models, audio_folder, tmp_path, capsys):
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.save(wrong / "a.npy", np.zeros((LATENT, 10), np.float32))
    np.save(wrong / "b.npy", np.zeros((LATENT + 2, 10), np.float32))
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    out_dir = tmp_path / "never"
    only_broken, empty = tmp_path / "only_broken", tmp_path / "empty"
    only_broken.mkdir()
    empty.mkdir()
    (only_broken / "x.flac").write_bytes(b"no")
    cases = [
        ("encode", [only_broken], "nothing to encode: x.flac: cannot decode audio"),
        ("reconstruct", [empty], "nothing to reconstruct: no input files found"),
        ("decode", [wrong], "b.npy: latent size 8, but the model decodes 6 latent dimensions"),
        ("encode", [audio_folder, "--model", tmp_path / "missing_run"], "no such run folder"),
        ("encode", [audio_folder, "--model", tmp_path / "missing.ts"], "no such exported model"),
        ("encode", [tmp_path / "nothing_here"], "no such file or folder"),
        ("reconstruct", [audio_folder, "--batch-seconds", "0.01"], "--batch-seconds 0.01 is too short"),
        ("reconstruct", [audio_folder, "--device", "potato"], "--device potato: expected cpu, cuda"),
        ("reconstruct", [audio_folder, "--model", models["torchscript"], "--precision", "bf16"],
         "model.ts: --precision bf16 needs the run folder or checkpoint"),
    ]
    if not torch.cuda.is_available():
        cases.append(("encode", [audio_folder, "--device", "cuda"], "has no CUDA device"))
    for script, args, message in cases:
        if "--model" not in args:
            args = [*args, "--model", models["checkpoint"]]
        code, out = run_script(script, [*args, "--output", out_dir, "--quiet"], capsys)
        assert code == 2 and message in out.err and "Traceback" not in out.err, (script, out.err)
        assert not out_dir.exists()
    code, out = run_script("encode", [audio_folder, "--model", models["checkpoint"], "--output", a_file], capsys)
    assert code == 2 and "is a file; expected a folder" in out.err
    np.save(wrong / "b.npy", np.zeros((1, 2, 3), np.float32))
    code, out = run_script("decode", [wrong, "--model", models["checkpoint"], "--output", out_dir, "--quiet"], capsys)
    assert code == 0
    assert "b.npy: expected a float array [Z, L] (or integer codes [n, L]), got float32 [1, 2, 3]" in out.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.wav"]  # no temporary left behind


def test_bf16_runs_the_convolution_stacks_in_bfloat16_and_stays_close(models, loaded, audio_folder, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # any CPU: slow ones only slower
    model = load(models["checkpoint"], precision="bf16")
    module = model.module
    stacks = [module.encoder.net, module.decoder.net, module.decoder.head, module.decoder.noise.net]
    assert model.precision == "bf16" and all(p.dtype == torch.bfloat16 for s in stacks for p in s.parameters())
    assert all(t.dtype == torch.float32 for t in [*module.pqmf.parameters(), *module.pqmf.buffers()])
    assert module.latent_pca.dtype == torch.float32
    audio = torch.from_numpy(load_audio(audio_folder / "long.wav", RATE, 1))[None]  # [1, 1, T]
    reference, out = loaded["checkpoint"].reconstruct(audio), model.reconstruct(audio)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    error_db = 20 * torch.log10((out - reference).norm() / reference.norm())
    assert -80 < error_db < -25  # bfloat16 products (nothing like exact), close to float32
    code, captured = run_script("reconstruct", [audio_folder / "long.wav", "--model", models["checkpoint"],
                                                "--precision", "bf16", "--output", tmp_path, "--quiet"], capsys)
    assert code == 0, captured.err
    written, _ = soundfile.read(str(tmp_path / "long.wav"), dtype="float32")
    np.testing.assert_allclose(written, out[0, 0].numpy(), atol=1e-6)


def test_unknown_precision_is_refused(models):
    with pytest.raises(UserError, match="--precision 16: expected one of 32, bf16"):
        load(models["checkpoint"], precision="16")


def test_bf16_is_refused_on_an_x86_cpu_without_bfloat16_arithmetic(models, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    with pytest.raises(UserError, match="no bfloat16 arithmetic .AVX512-BF16 or AMX.; bfloat16 convolutions would"):
        load(models["checkpoint"], precision="bf16")
    load(models["checkpoint"], precision="32")  # float32 is unaffected
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert load(models["checkpoint"], precision="bf16").precision == "bf16"


def test_decode_refuses_latents_that_are_not_latents(models, tmp_path, capsys):
    folder = tmp_path / "latents"
    folder.mkdir()
    np.save(folder / "good.npy", np.zeros((LATENT, 10), np.float32))
    np.save(folder / "huge.npy", np.full((LATENT, 10), 1e30, np.float32))
    (folder / "text.npy").write_text("hello, not an array")
    code, out = run_script("decode", [folder, "--model", models["checkpoint"], "--output", tmp_path / "out",
                                      "--quiet"], capsys)
    assert code == 0, out.err
    assert "huge.npy: latent values up to 1e+30, beyond the decodable range of +-1000" in out.out
    assert "text.npy: not a .npy array file" in out.out and "pickle" not in out.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]


@pytest.mark.slow
def test_scripts_run_as_programs(models, audio_folder, tmp_path):
    """Each script of the issue as a separate process, all at once (interpreter start-up dominates)."""
    latents = tmp_path / "latents"
    latents.mkdir()
    np.save(latents / "z.npy", np.zeros((LATENT, 20), np.float32))
    commands = {
        "encode": [audio_folder / "sub", "--output", tmp_path / "enc"],
        "decode": [latents, "--output", tmp_path / "dec"],
        "reconstruct": [audio_folder / "sub", "--output", tmp_path / "rec", "--format", "flac"],
        "evaluate": ["--data", audio_folder / "sub", "--output", tmp_path / "eval" / "report.json", "--no-pitch"],
    }
    processes = {name: subprocess.Popen([sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args),
                                         "--model", str(models["torchscript"])],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, args in commands.items()}
    outputs = {}
    for name, process in processes.items():
        outputs[name] = process.communicate(timeout=300)
        assert process.returncode == 0, outputs[name][1]
    for name in ("encode", "decode", "reconstruct"):
        out, err = outputs[name]
        assert f"{name}: 1 file(s) written" in out and "skipped: 0" in out
        assert f"{name}: 100%" in err  # the progress bar
    assert (tmp_path / "enc" / "short.npy").is_file() and (tmp_path / "rec" / "short.flac").is_file()
    assert soundfile.info(str(tmp_path / "dec" / "z.wav")).frames == 20 * HOP
    assert "| loudness L1 (dB) ↓ |" in outputs["evaluate"][0] and (tmp_path / "eval" / "report.md").is_file()
