"""The discrete codec (bottleneck rvq): training, export methods and attributes, nn~ contract, scripts on codes."""
import json

import numpy as np
import pytest
import torch
import yaml

from nn_client import parse_report, run_nn_client
from helpers import HOP, ROOT, TINY, run_script, train_checkpoint, write_tone
from rave_ddsp.runtime.export import build, export, load_model
from rave_ddsp.runtime.inference import load
from rave_ddsp.train.model import RAVE

RVQ = dict(bottleneck="rvq", n_codebooks=3, codebook_size=16, codebook_dim=4)
N, K = RVQ["n_codebooks"], RVQ["codebook_size"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_checkpoint(tmp_path_factory.mktemp("rvq") / "run", **RVQ).parents[1]


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rvq_exports")
    paths = {}
    for streaming in (False, True):
        paths[streaming] = folder / f"{'streaming' if streaming else 'offline'}.ts"
        export(run, paths[streaming], streaming=streaming)
    return paths


def audio(batch=2, frames=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * HOP) / 16000
    tone = 0.4 * torch.sin(2 * torch.pi * 440 * t) * torch.linspace(0, 1, frames * HOP)
    return (tone + 0.05 * torch.randn(batch, 1, frames * HOP, generator=generator)).float()


# ------------------------------------------------------------------------ training --
def test_a_discrete_model_trains_with_commitment_and_codebook_losses_and_no_kl():
    torch.manual_seed(0)
    model = RAVE(**{**TINY, **RVQ})
    assert model.encoder.net[-1].out_channels == TINY["latent_size"]  # no posterior scale
    bands, mean, scale = model.encode(audio())
    z, terms = model.bottleneck(mean, scale)
    assert set(terms) == {"commitment", "codebook"} and model.quantizer(mean)[1].shape == (2, N, 16)
    waveform, noise, magnitudes = model.decoder.branches(z)
    loss_terms = model.spectral_loss(audio(), bands, waveform, noise, magnitudes)
    loss_terms.update(terms)
    loss = model.generator_loss(loss_terms)
    assert torch.isclose(loss, loss_terms["spectral"] + 0.25 * terms["commitment"] + terms["codebook"])
    loss.backward()
    for name, module in (("encoder", model.encoder), ("quantizer", model.quantizer)):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, name
    assert model.bitrate == pytest.approx(N * 4 * 16000 / HOP)
    assert RAVE(**TINY).quantizer is None and RAVE(**TINY).bitrate == 0  # vae stays the default


def test_the_discrete_overlay_parses_and_names_its_bitrate():
    overlay = yaml.safe_load((ROOT / "configs" / "discrete.yaml").read_text())["model"]
    model = RAVE(**{**TINY, **overlay})
    assert model.quantizer.n_codebooks == 8 and model.quantizer.codebook_size == 1024
    small = yaml.safe_load((ROOT / "configs" / "small.yaml").read_text())["model"]
    hop = small["n_bands"] * np.prod(small["ratios"])
    assert 8 * 10 * small["sample_rate"] / hop == pytest.approx(3445.3, abs=0.1)  # the comment's 3.45 kbps
    assert "3.45 kbps" in (ROOT / "configs" / "discrete.yaml").read_text()


# -------------------------------------------------------------------------- export --
def test_decode_codes_of_encode_codes_is_forward_and_codes_are_integers(exports):
    scripted = torch.jit.load(str(exports[False]))
    x = audio()
    with torch.no_grad():
        codes = scripted.encode_codes(x)
        assert codes.shape == (2, N, 16) and codes.dtype == torch.float32
        assert torch.equal(codes, codes.round()) and codes.min() >= 0 and codes.max() < K
        torch.testing.assert_close(scripted.decode_codes(codes), scripted.forward(x), atol=1e-6, rtol=1e-5)
        # encode returns the quantized latent: one of at most K^N values per frame, as the codes say
        latent = scripted.encode(x).transpose(1, 2).reshape(-1, TINY["latent_size"])
        tuples = codes.transpose(1, 2).reshape(-1, N)
        assert len(torch.unique(latent.round(decimals=4), dim=0)) == len(torch.unique(tuples, dim=0)) <= K ** N


def test_encode_is_the_pca_of_the_quantized_latent(run):
    model = load_model(run, streaming=False)
    scripted = build(load_model(run, streaming=False), TINY["latent_size"])
    x = audio()
    with torch.no_grad():
        _, mean, _ = model.encode(x)
        quantized = model.latent(mean)
        torch.testing.assert_close(scripted.encode(x), model.latent_pca @ (quantized - model.latent_mean[:, None]),
                                   atol=1e-5, rtol=1e-4)
        assert not torch.allclose(quantized, mean, atol=1e-3)  # it did quantize
        model.decoder.noise.deterministic = True
        torch.testing.assert_close(scripted.forward(x), model.forward(x), atol=1e-5, rtol=1e-4)


def test_one_bit_flipped_in_a_code_decodes_differently_and_one_bit_of_input_is_absorbed(run, exports):
    scripted = torch.jit.load(str(exports[False]))
    x = audio(batch=1)
    with torch.no_grad():
        codes = scripted.encode_codes(x)
        reference = scripted.decode_codes(codes)
        for i in range(N):
            flipped = codes.clone()
            flipped[0, i, 5] = float(int(flipped[0, i, 5]) ^ 1)  # the code's lowest bit
            assert (scripted.decode_codes(flipped) - reference).abs().max() > 1e-4, f"codebook {i} ignored"
        # one LSB (16-bit) added to the input moves the encoder's output, yet the codes and so the output
        # stay the same: the decoder sees only the quantized latent
        y = x.clone()
        y[0, 0, 100] += 2 ** -15
        model = load_model(run, streaming=False)
        assert not torch.equal(model.encode(x)[1], model.encode(y)[1])
        assert torch.equal(scripted.encode_codes(y), codes)
        assert torch.equal(scripted.forward(y), scripted.forward(x))


def test_codebooks_attribute_sets_the_bitrate(exports):
    scripted = torch.jit.load(str(exports[False]))
    x = audio()
    with torch.no_grad():
        codes = scripted.encode_codes(x)
        full = scripted.forward(x)
        assert "codebooks" in scripted.get_attributes() and "temperature" not in scripted.get_attributes()
        assert scripted.get_codebooks() == [N]
        assert scripted.set_codebooks(0) == -1 and scripted.set_codebooks(N + 1) == -1
        assert scripted.set_codebooks(1) == 0 and scripted.get_codebooks() == [1]
        one = scripted.forward(x)
        assert not torch.allclose(one, full, atol=1e-4)
        # decode_codes with 1 codebook ignores the others, as if they were anything
        scrambled = codes.clone()
        scrambled[:, 1:] = (scrambled[:, 1:] + 3) % K
        torch.testing.assert_close(scripted.decode_codes(scrambled), scripted.decode_codes(codes))
        torch.testing.assert_close(scripted.decode_codes(codes), one, atol=1e-6, rtol=1e-5)
        # out-of-range and fractional codes are rounded and clamped, never an error in the audio thread
        wild = codes.clone()
        wild[:, 0, :4] = torch.tensor([-3.0, 2.4, K + 7.0, 1e9])
        clamped = codes.clone()
        clamped[:, 0, :4] = torch.tensor([0.0, 2.0, K - 1.0, K - 1.0])
        torch.testing.assert_close(scripted.decode_codes(wild), scripted.decode_codes(clamped))


def test_streaming_codes_equal_one_call(exports):
    streaming = torch.jit.load(str(exports[True]))
    offline = torch.jit.load(str(exports[True]))
    x = audio(batch=1, frames=32)
    with torch.no_grad():
        whole = offline.encode_codes(x)
        pieces = torch.cat([streaming.encode_codes(x[..., i:i + 4 * HOP]) for i in range(0, x.shape[-1], 4 * HOP)], -1)
        assert torch.equal(pieces, whole)
        streaming, offline = torch.jit.load(str(exports[True])), torch.jit.load(str(exports[True]))
        whole = offline.decode_codes(pieces)
        out = torch.cat([streaming.decode_codes(pieces[..., i:i + 2]) for i in range(0, 32, 2)], -1)
        torch.testing.assert_close(out, whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("streaming", [False, True], ids=["offline", "streaming"])
def test_discrete_exports_pass_nn_client(exports, nn_client_bin, streaming):
    for buffer in ("2048", "0"):
        result = run_nn_client(exports[streaming], "--strict", "--threads", "1", "--seconds", "2", "--buffer", buffer,
                               *(["--compare-offline"] if streaming else []), binary=nn_client_bin)
        report = parse_report(result.stdout)
        assert report.ok, result.stdout[-4000:]
        assert "encode_codes" in result.stdout and "decode_codes" in result.stdout


def test_discrete_streaming_export_runs_in_libtorch_251(exports, nn_client_251):
    result = run_nn_client(exports[True], "--strict", "--threads", "1", "--seconds", "2", "--batch", "2",
                           "--compare-offline", binary=nn_client_251)
    assert parse_report(result.stdout).ok, result.stdout[-4000:]
    assert "decode_codes" in result.stdout


def test_export_summary_names_the_bitrate(run, tmp_path):
    summary = export(run, tmp_path / "m.ts")
    text = summary.describe()
    assert summary.n_codebooks == N and summary.bitrate == pytest.approx(N * 4 * 16000 / HOP)
    assert f"{N} codebooks, {N * 4 * 16000 / HOP / 1000:.2f} kbps" in text
    assert "attributes: noise_level, latent_bias, latent_scale, codebooks" in text
    assert summary.methods["encode_codes"] == [1, 1, N, HOP] and summary.methods["decode_codes"] == [N, HOP, 1, 1]


# ------------------------------------------------------------------------- scripts --
@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    write_tone(folder / "a.wav", 0.7, 16000)
    write_tone(folder / "b.wav", 0.3, 22050, frequency=300.0)
    return folder


@pytest.mark.parametrize("kind", ["checkpoint", "torchscript"])
def test_codes_through_encode_and_decode_scripts(run, exports, tones, tmp_path, capsys, kind):
    source = run if kind == "checkpoint" else exports[False]
    model = load(source)
    codes_dir, out = tmp_path / "codes", tmp_path / "out"
    code, printed = run_script("encode", [tones, "--model", source, "--output", codes_dir, "--codes", "--quiet"],
                               capsys)
    assert code == 0, printed.err
    codes = np.load(codes_dir / "a.npy")
    assert codes.dtype == np.uint8 and codes.shape == (N, -(-int(0.7 * 16000) // HOP))  # 16 entries: uint8
    info = json.loads((codes_dir / "a.json").read_text())
    assert info["codebooks"] == N and info["bitrate_bps"] == pytest.approx(N * 4 * 16000 / HOP)
    assert info["fingerprint"] == model.fingerprint and len(model.fingerprint) == 16
    x = torch.from_numpy(np.load(codes_dir / "a.npy").astype(np.int64))
    expected = model.decode_codes(x[None])[0, 0, : int(0.7 * 16000)]
    code, printed = run_script("decode", [codes_dir, "--model", source, "--output", out, "--quiet"], capsys)
    assert code == 0, printed.err and "2 file(s) written" in printed.out
    import soundfile

    decoded, rate = soundfile.read(str(out / "a.wav"), always_2d=True)
    assert rate == 16000 and decoded.shape == (int(0.7 * 16000), 1)
    np.testing.assert_allclose(decoded[:, 0], expected.numpy(), atol=1e-6)
    # the same audio as reconstructing (the codes are the model's bottleneck)
    np.testing.assert_allclose(decoded[:, 0], model.reconstruct(
        torch.from_numpy(soundfile.read(str(tones / "a.wav"), always_2d=True)[0].T).float()[None])[0, 0].numpy(),
        atol=1e-5)
    # --codebooks 1, at encoding and at decoding, agree
    code, printed = run_script("encode", [tones / "a.wav", "--model", source, "--output", tmp_path / "one",
                                          "--codes", "--codebooks", "1", "--quiet"], capsys)
    assert code == 0 and np.load(tmp_path / "one" / "a.npy").shape[0] == 1
    assert json.loads((tmp_path / "one" / "a.json").read_text())["bitrate_bps"] == pytest.approx(4 * 16000 / HOP)
    for folder, extra in ((tmp_path / "one", []), (codes_dir, ["--codebooks", "1"])):
        target = tmp_path / f"dec_{len(extra)}"
        code, printed = run_script("decode", [folder / "a.npy", "--model", source, "--output", target, "--quiet",
                                              *extra], capsys)
        assert code == 0, printed.err
    np.testing.assert_allclose(soundfile.read(str(tmp_path / "dec_0" / "a.wav"))[0],
                               soundfile.read(str(tmp_path / "dec_2" / "a.wav"))[0], atol=1e-6)
    assert not np.allclose(soundfile.read(str(tmp_path / "dec_0" / "a.wav"))[0], decoded[:, 0], atol=1e-4)


def test_bad_codes_are_refused_by_name(run, tmp_path, capsys, tiny_run):
    folder = tmp_path / "codes"
    code, printed = run_script("encode", [tmp_path / "missing.wav", "--model", run, "--output", folder,
                                          "--codes"], capsys)
    assert code != 0
    folder.mkdir()
    np.save(folder / "good.npy", np.zeros((N, 10), np.uint8))
    np.save(folder / "range.npy", np.full((N, 10), K, np.uint8))
    code, printed = run_script("decode", [folder, "--model", run, "--output", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, printed.err
    assert f"range.npy: codes 16..16 outside the codebooks' 0..{K - 1}" in printed.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.wav"]
    # another model's codes (its fingerprint in the sidecar): the run stops before writing anything
    (folder / "good.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "length": 100,
                                                  "sample_rate": 16000}))
    code, printed = run_script("decode", [folder, "--model", run, "--output", tmp_path / "out2"], capsys)
    assert code != 0 and "good.npy: encoded by another model (codebook fingerprint 0123456789abcdef" in printed.err
    assert "Traceback" not in printed.err and not (tmp_path / "out2").exists()
    (folder / "good.json").unlink()
    np.save(folder / "many.npy", np.zeros((N + 1, 10), np.uint8))
    code, printed = run_script("decode", [folder / "many.npy", "--model", run, "--output", tmp_path / "o3"], capsys)
    assert code != 0 and f"codes of {N + 1} codebooks, but" in printed.err
    # codes given to a continuous model, and --codes asked of one
    code, printed = run_script("decode", [folder / "good.npy", "--model", tiny_run["checkpoint"], "--output",
                                          tmp_path / "o4"], capsys)
    assert code != 0 and "is a continuous model (bottleneck vae)" in printed.err
    write_tone(tmp_path / "t.wav", 0.1, 16000)
    code, printed = run_script("encode", [tmp_path / "t.wav", "--model", tiny_run["checkpoint"], "--output",
                                          tmp_path / "o5", "--codes"], capsys)
    assert code != 0 and "has no codes" in printed.err
    code, printed = run_script("encode", [tmp_path / "t.wav", "--model", run, "--output", tmp_path / "o6",
                                          "--codes", "--codebooks", str(N + 1)], capsys)
    assert code != 0 and f"--codebooks {N + 1}: the model has {N} codebooks" in printed.err


def test_evaluate_scores_each_bitrate_with_codebook_usage(run, tiny_run, tones, tmp_path, capsys):
    output = tmp_path / "report.json"
    code, printed = run_script("evaluate", ["--model", run, "--compare", tiny_run["checkpoint"], "--data", tones,
                                            "--output", output, "--codebooks", "1", "3", "9", "--no-pitch", "--quiet"],
                               capsys)
    assert code == 0, printed.err
    report = json.loads(output.read_text())
    one, three, vae = report["models"]  # 9 is more than the model has: left out; the vae model once
    assert (one["codebooks"], three["codebooks"], "codebooks" in vae) == (1, 3, False)
    assert one["bitrate_bps"] == pytest.approx(4 * 16000 / HOP)
    assert three["bitrate_bps"] == pytest.approx(3 * 4 * 16000 / HOP)
    for model in (one, three):
        assert len(model["codebook_perplexity_over_size"]) == N
        assert all(0 < p <= 1 for p in model["codebook_perplexity_over_size"])
        assert all(0 < u <= 1 for u in model["codebook_entries_used"])
    assert one["aggregate"]["mel_distance"]["mean"] != three["aggregate"]["mel_distance"]["mean"]
    code, printed = run_script("evaluate", ["--model", run, "--data", tones, "--output", tmp_path / "all.json",
                                            "--no-pitch", "--quiet"], capsys)
    full = json.loads((tmp_path / "all.json").read_text())["models"][0]
    assert full["codebooks"] == N
    assert full["aggregate"]["mel_distance"]["mean"] == pytest.approx(three["aggregate"]["mel_distance"]["mean"])
    table = output.with_suffix(".md").read_text()
    assert f"| codes: codebooks (bitrate) | 1 of {N} (2.00 kbps) | 3 of {N} (6.00 kbps) | - |" in table
    assert f"| metric | {run} (1 codebooks) | {run} (3 codebooks) | {tiny_run['checkpoint']} |" in table
