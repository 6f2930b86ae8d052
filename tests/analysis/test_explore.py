"""scripts/explore.py and rave_ddsp.analysis.explore: every subcommand on a tiny checkpoint and .ts, PCA numbers, errors."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile
import torch
from helpers import ROOT

from rave_ddsp.analysis import explore as ex
from rave_ddsp.errors import UserError
from rave_ddsp.runtime.export import load_model
from rave_ddsp.runtime.inference import load
from rave_ddsp.train.latent import LatentStatistics, latent_size_for_fidelity, prior_mean

SCRIPT = ROOT / "scripts" / "explore.py"
RATE = 16000  # the tiny model's (helpers.TINY)
SECONDS = 0.25


def load_script():
    spec = importlib.util.spec_from_file_location("explore_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


explore = load_script()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's convolutions are too small for threads to pay (on a busy machine they cost 50x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """A 0.25 s chirp and a 0.2 s noise burst (different lengths), and a file that is not audio."""
    folder = tmp_path_factory.mktemp("explore-audio")
    t = np.arange(int(SECONDS * RATE)) / RATE
    soundfile.write(folder / "chirp.wav", 0.3 * np.sin(2 * np.pi * (200 + 800 * t) * t), RATE)
    soundfile.write(folder / "noise.wav", 0.1 * np.random.default_rng(0).standard_normal(int(0.2 * RATE)), RATE)
    (folder / "broken.wav").write_bytes(b"not a wave file")
    return folder


def run_main(*argv):
    return explore.main([str(a) for a in argv])


def assert_png(path: Path):
    assert path.is_file() and path.stat().st_size > 0, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200 and image.std() > 0, path


def assert_wav(path: Path, samples: int):
    info = soundfile.info(str(path))
    assert (info.samplerate, info.frames, info.channels) == (RATE, samples, 1), path


# ------------------------------------------------------------------ subcommands --
@pytest.mark.parametrize("kind", ["checkpoint", "ts"])
def test_every_subcommand_writes_what_it_says(models, sounds, tmp_path, kind, capsys):
    model, chirp, noise = models[kind], sounds / "chirp.wav", sounds / "noise.wav"
    chirp_samples, noise_samples = int(SECONDS * RATE), int(0.2 * RATE)
    out = tmp_path
    common = ["--model", model, "--quiet"]
    assert run_main("pca", *common, chirp, noise, "--output", out / "pca") == 0
    assert run_main("sweep", *common, chirp, "--output", out / "sweep", "--dims", 2, "--steps", 2) == 0
    assert run_main("interpolate", *common, chirp, noise, "--output", out / "interp", "--steps", 2) == 0
    start = ["--start", chirp] if kind == "ts" else []
    assert run_main("walk", *common, "--output", out / "walk", "--seconds", 0.2, *start) == 0
    assert run_main("sample", *common, "--output", out / "sample", "--seconds", 0.2) == 0
    assert run_main("plot", *common, chirp, "--output", out / "plot", *(["--pitch"] if kind == "ts" else [])) == 0
    printed = capsys.readouterr().out
    expected = {
        "pca": ["pca.json", "pca.png"],
        "sweep": [f"sweep_dim{d}_step{i}.wav" for d in range(2) for i in range(2)] + ["sweep.png"],
        "interp": ["interpolate_step0.wav", "interpolate_step1.wav", "interpolate.png"],
        "walk": ["walk.wav", "walk.png"], "sample": ["sample_0.wav", "sample_0.png"], "plot": ["plot_chirp.png"],
    }
    for folder, names in expected.items():
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(names)
        for name in names:
            path = out / folder / name
            assert f"wrote {path}" in printed
            if name.endswith(".png"):
                assert_png(path)
    for name in expected["sweep"][:-1]:
        assert_wav(out / "sweep" / name, chirp_samples)
    for name in expected["interp"][:-1]:
        assert_wav(out / "interp" / name, noise_samples)  # the shorter of the two
    assert_wav(out / "walk" / "walk.wav", int(0.2 * RATE))
    assert_wav(out / "sample" / "sample_0.wav", int(0.2 * RATE))
    report = json.loads((out / "pca" / "pca.json").read_text())
    assert report["files"] == 2 and report["latent_size"] == 6
    for part in ("data_pca", "model_axes"):
        fidelity = torch.tensor(report[part]["fidelity"])
        assert report[part]["latent_size_for_fidelity"] == {
            str(t): latent_size_for_fidelity(fidelity, t) for t in (0.9, 0.95, 0.99)}
    stored = report["model_stored"]["fidelity"]
    if kind == "ts":
        assert stored is None and "not stored in a .ts" in printed
    else:
        np.testing.assert_allclose(stored, load_model(model, streaming=False).latent_fidelity.numpy(), atol=1e-6)


class WithoutNoiseLevel(torch.nn.Module):
    """A model's encode/decode without the noise_level attribute, as an official RAVE export has them."""

    def __init__(self, module):
        super().__init__()
        self.inner = module

    def encode(self, audio):
        return self.inner.encode(audio)

    def decode(self, latent):
        return self.inner.decode(latent)


def plot_titles(model_source, sounds, output, monkeypatch):
    """Run ``explore.py plot`` on the chirp: the left titles of the figure's axes, top to bottom."""
    titles = []

    def save(fig, path):
        titles.extend(ax.get_title(loc="left") for ax in fig.axes)
        saved(fig, path)

    saved = explore.save
    monkeypatch.setattr(explore, "save", save)
    assert run_main("plot", "--model", model_source, sounds / "chirp.wav", "--output", output, "--quiet") == 0
    assert_png(output / "plot_chirp.png")
    return titles


@pytest.mark.parametrize("kind", ["checkpoint", "ts"])
def test_plot_draws_the_noise_branch_with_its_share(models, sounds, tmp_path, kind, monkeypatch):
    titles = plot_titles(models[kind], sounds, tmp_path, monkeypatch)
    model = load(models[kind])
    audio, latent = ex.encode_file(model, sounds / "chirp.wav")
    output = ex.render(model, latent, audio.shape[-1])  # [C, T]
    assert model.module.set_noise_level(0.0) == 0
    noise = output - ex.render(model, latent, audio.shape[-1])  # [C, T]
    share_db = 10 * math.log10(float(noise.double().pow(2).sum() / output.double().pow(2).sum()))
    assert titles[:2] == ["input", "reconstruction"]
    prefix, suffix = "noise branch of the reconstruction: ", " dB of its energy"
    assert titles[2].startswith(prefix) and titles[2].endswith(suffix), titles[2]
    assert float(titles[2][len(prefix):-len(suffix)]) == pytest.approx(share_db, abs=0.051)
    assert -60 < share_db < 0  # the tiny model's noise branch is audible


def test_plot_without_noise_level_leaves_the_panel_out(models, sounds, tmp_path, monkeypatch, capsys):
    model = load(models["ts"])
    model.module = WithoutNoiseLevel(model.module)
    monkeypatch.setattr(explore, "load", lambda source, device, precision: model)
    titles = plot_titles(models["ts"], sounds, tmp_path, monkeypatch)
    assert titles[:2] == ["input", "reconstruction"] and titles[2].startswith("latents")
    note = "note: model.ts has no noise_level (not a rave_ddsp export): no noise-branch panel"
    assert note in capsys.readouterr().out


def test_pca_skips_unreadable_files_and_lists_them(models, sounds, tmp_path, capsys):
    assert run_main("pca", "--model", models["ts"], sounds, "--output", tmp_path, "--quiet") == 0
    captured = capsys.readouterr()
    assert "skipped broken.wav: cannot decode audio" in captured.err
    assert json.loads((tmp_path / "pca.json").read_text())["files"] == 2


def test_walk_is_reproducible_with_a_seed_and_differs_with_another(models, tmp_path):
    def audio(seed):
        folder = tmp_path / f"walk{seed}"
        assert run_main("walk", "--model", models["ts"], "--output", folder, "--seconds", 0.05, "--seed", seed,
                        "--quiet") == 0
        return soundfile.read(folder / "walk.wav")[0]

    first = audio(1)
    assert np.array_equal(first, audio(1))
    assert not np.allclose(first, audio(2))


def test_prior_samples_are_reproducible_with_a_seed_and_differ_with_another(models):
    model = load(models["ts"])

    def draw(seed):
        return ex.prior_samples(model, 2, 20, 0.01, 1.0, 6, torch.Generator().manual_seed(seed))  # [2, Z, L]

    first = draw(1)
    assert torch.equal(first, draw(1)) and not torch.allclose(first, draw(2))
    assert not torch.allclose(first[0], first[1])  # two samples of one call differ too
    assert torch.equal(ex.render(model, first[0], 640), ex.render(model, draw(1)[0], 640))  # decoding adds no noise
    partial = ex.prior_samples(model, 1, 20, 0.0, 1.0, 2, torch.Generator().manual_seed(1))[0]  # [Z, L]
    torch.testing.assert_close(partial[2:], ex.model_prior_mean(model)[2:, None].expand(4, 20))


def test_random_walk_starts_at_start_and_moves_only_the_first_dims(models):
    model = load(models["ts"])
    start = torch.linspace(-1, 1, 6)
    walk = ex.random_walk(model, 30, 0.2, 1.0, 2, start, torch.Generator().manual_seed(0))  # [Z, L]
    assert torch.equal(walk[:, 0], start)
    assert bool((walk[:2, 1:] != start[:2, None]).all())
    assert torch.equal(walk[2:], start[2:, None].expand(4, 30))


# --------------------------------------------------------------------- library --
def test_sweep_moves_the_audio_further_with_larger_offsets(models, sounds):
    model = load(models["ts"])
    audio, latent = ex.encode_file(model, sounds / "chirp.wav")
    swept = ex.sweep(model, latent, 1, torch.tensor([0.0, 0.5, 1.0, 2.0]), audio.shape[-1], progress=False)
    distances = [float((swept[0, i] - swept[0, 0]).norm()) for i in range(4)]
    assert distances[0] == 0 and all(a < b for a, b in zip(distances, distances[1:])), distances
    assert torch.equal(swept[0, 0], ex.render(model, latent, audio.shape[-1]))  # offset 0: the reconstruction


@pytest.mark.parametrize("spherical", [False, True], ids=["linear", "spherical"])
def test_interpolation_endpoints_are_the_decoded_endpoints(models, sounds, spherical):
    model = load(models["checkpoint"])
    audio_a, a = ex.encode_file(model, sounds / "chirp.wav")
    audio_b, b = ex.encode_file(model, sounds / "noise.wav")
    frames, samples = b.shape[-1], audio_b.shape[-1]  # the noise is the shorter
    weights, audio = ex.interpolation(model, a[:, :frames], b[:, :frames], 3 if not spherical else 2, spherical,
                                      samples, progress=False)
    torch.testing.assert_close(audio[0], ex.render(model, a[:, :frames], samples), atol=1e-5, rtol=0)
    torch.testing.assert_close(audio[-1], ex.render(model, b[:, :frames], samples), atol=1e-5, rtol=0)
    if not spherical:
        torch.testing.assert_close(audio[1], ex.render(model, (a[:, :frames] + b[:, :frames]) / 2, samples),
                                   atol=1e-5, rtol=0)


def test_model_prior_mean_is_minus_r_mu_of_the_checkpoint(models):
    trained = load_model(models["checkpoint"], streaming=False)
    expected = prior_mean(trained.latent_mean, trained.latent_pca)
    for kind in ("checkpoint", "ts"):
        torch.testing.assert_close(ex.model_prior_mean(load(models[kind])), expected)
    assert float(expected.norm()) > 0  # the tiny model's latent mean is not zero


def test_pca_report_matches_numpy_on_synthetic_latents():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(4, 4, generator=generator) * torch.tensor([3.0, 1.0, 0.5, 0.1])
    frames = torch.randn(3000, 4, generator=generator) @ mixing.T + 2.0  # [N, Z]
    statistics = LatentStatistics(4)
    for chunk in frames.split(700):
        statistics.update(chunk.T[None])  # [1, Z, L]
    report = ex.PCAReport.from_statistics(statistics, files=3, model_fidelity=None)
    covariance = np.cov(frames.double().numpy().T, bias=True)
    eigenvalues = np.linalg.eigvalsh(covariance)[::-1]
    np.testing.assert_allclose(report.variance.numpy(), eigenvalues, rtol=1e-5)
    np.testing.assert_allclose(report.fidelity.numpy(), np.cumsum(eigenvalues) / eigenvalues.sum(), rtol=1e-5)
    np.testing.assert_allclose(report.axis_variance.numpy(), np.diag(covariance), rtol=1e-5)
    np.testing.assert_allclose(report.axis_fidelity.numpy(), np.cumsum(np.diag(covariance)) / np.trace(covariance),
                               rtol=1e-5)
    assert report.to_dict()["frames"] == 3000


def test_fidelity_sizes_on_a_constructed_case():
    """Variances 5, 3, 1.5, 0.4, 0.1 along the axes: fidelity .5, .8, .95, .99, 1, so sizes 3, 3, 4 (.95 at 3)."""
    scales = torch.tensor([5.0, 3.0, 1.5, 0.4, 0.1]).sqrt()
    signs = torch.tensor([[1.0, -1.0]]).repeat(1, 5)  # [1, 10]: +-1, mean 0, variance 1
    frames = torch.cat([torch.eye(5)[i][:, None] * signs * scales[i] for i in range(5)], dim=1)  # [Z, 50]
    statistics = LatentStatistics(5)
    statistics.update(frames[None])
    report = ex.PCAReport.from_statistics(statistics, files=1, model_fidelity=torch.tensor([0.5, 0.9, 0.99, 1, 1]))
    np.testing.assert_allclose(report.fidelity.numpy(), [0.5, 0.8, 0.95, 0.99, 1.0], atol=1e-6)
    assert report.sizes(report.fidelity) == {"0.9": 3, "0.95": 3, "0.99": 4}
    assert report.sizes(report.axis_fidelity) == {"0.9": 3, "0.95": 3, "0.99": 4}
    assert report.sizes(report.model_fidelity) == {"0.9": 2, "0.95": 3, "0.99": 3}


def test_pca_of_constant_latents_is_refused():
    statistics = LatentStatistics(3)
    statistics.update(torch.ones(1, 3, 10))
    with pytest.raises(UserError, match="do not vary"):
        ex.PCAReport.from_statistics(statistics, files=1, model_fidelity=None)


# ---------------------------------------------------------------------- errors --
@pytest.mark.parametrize("argv,message", [
    (["sample", "--model", "{tmp}/missing.ts"], "missing.ts: no such exported model"),
    (["sample", "--model", "{tmp}/missing_run"], "no such run folder or checkpoint"),
    (["plot", "--model", "{ts}", "{audio}/broken.wav"], "broken.wav: cannot decode audio"),
    (["plot", "--model", "{ts}", "{audio}/absent.wav"], "absent.wav"),
    (["sweep", "--model", "{ts}", "{audio}/chirp.wav", "--dims", "7"], "--dims 7 is outside 1..6"),
    (["walk", "--model", "{ts}", "--dims", "0"], "--dims 0 is outside 1..6"),
    (["interpolate", "--model", "{ts}", "{audio}/chirp.wav", "{audio}/noise.wav", "--steps", "1"], "at least 2"),
    (["sample", "--model", "{ts}", "--seconds", "0"], "positive duration"),
    (["walk", "--model", "{ts}", "--tau", "0"], "--tau 0.0"),
    (["sample", "--model", "{ts}", "--device", "cuda:0" if not torch.cuda.is_available() else "nonsense"], "--device"),
    (["pca", "--model", "{ts}", "{audio}/broken.wav"], "no readable audio"),
], ids=["missing-ts", "missing-run", "unreadable-audio", "missing-audio", "dims-too-many", "dims-zero", "one-step",
        "zero-seconds", "zero-tau", "bad-device", "pca-nothing-readable"])
def test_bad_input_is_one_line_and_exit_status_2(models, sounds, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, ts=models["ts"], audio=sounds) for a in argv]
    argv += ["--output", str(tmp_path / "out"), "--quiet"]
    assert explore.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()  # a failed exploration leaves no folder behind


@pytest.mark.slow
def test_runs_as_a_script(models, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "sample", "--model", str(models["ts"]), "--output",
                             str(tmp_path), "--seconds", "0.1", "--count", "2", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'sample_1.wav'}" in result.stdout
    assert_wav(tmp_path / "sample_1.wav", int(0.1 * RATE))


def test_spectrogram_colours_scale_to_the_signal_and_silence_stays_dark():
    from rave_ddsp.analysis.figures import DYNAMIC_RANGE_DB, _spectrogram
    from rave_ddsp.plots import FLOOR_DB, plt

    fig, ax = plt.subplots()
    silent = _spectrogram(ax, np.zeros(4096, np.float32), RATE).get_clim()
    assert silent == (FLOOR_DB, FLOOR_DB + DYNAMIC_RANGE_DB)  # silence at the darkest end, not the brightest
    tone = np.sin(2 * np.pi * 440 * np.arange(4096) / RATE).astype(np.float32)
    low, high = _spectrogram(ax, tone, RATE).get_clim()
    assert high > 0 and high - low == DYNAMIC_RANGE_DB  # a loud signal sets the top itself
    plt.close(fig)
