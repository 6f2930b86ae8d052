"""The LightningModule: shapes, both training phases, losses, latent statistics."""
import math
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from rave_ddsp.nn.encoder import kl_divergence, reparametrize
from rave_ddsp.train.latent import LatentStatistics, latent_size_for_fidelity
from rave_ddsp.train import losses
from rave_ddsp.train.model import RAVE, NonFiniteLossError, beta_schedule

TINY = dict(sample_rate=16000, n_bands=4, latent_size=4, hidden_channels=(8, 16, 16), ratios=(4, 2), dilations=(1, 3),
            noise_ratios=(2, 2), full_band_ffts=(256, 64), band_ffts=(32,), discriminators=("multi_scale",),
            discriminator_capacity_scale=0.0625, beta_warmup_steps=4)
HOP = 4 * 4 * 2


def tiny_model(**overrides) -> RAVE:
    torch.manual_seed(0)
    return RAVE(**{**TINY, **overrides})


def fit(model: RAVE, steps: int, channels: int = 1, length: int = 16 * HOP) -> L.Trainer:
    audio = [0.3 * torch.sin(torch.linspace(0, 200 * (i + 1), length)).repeat(channels, 1) for i in range(8)]
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, DataLoader(audio, batch_size=2))
    return trainer


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_reconstruction_shapes(channels):
    model = tiny_model(channels=channels)
    audio = torch.randn(3, channels, 8 * HOP)
    bands, mean, scale = model.encode(audio)
    assert bands.shape == (3, channels * 4, 8 * HOP // 4)
    assert mean.shape == scale.shape == (3, 4, 8)
    assert float(scale.min()) > 0
    assert model(audio).shape == audio.shape
    assert model.hop_length == HOP


def test_length_not_multiple_of_hop_is_refused():
    with pytest.raises(ValueError, match="multiple of the hop length 32"):
        tiny_model().encode(torch.randn(1, 1, 100))


@pytest.mark.parametrize("gain_db", [-40.0, -20.0])
def test_untrained_waveform_head_starts_at_its_initial_gain(gain_db):
    model = tiny_model(decoder_initial_gain_db=gain_db)
    with torch.no_grad():
        hidden = model.decoder.net(torch.randn(4, 4, 16))
        _, amplitude = model.decoder.head(hidden).chunk(2, dim=1)
    median_gain_db = 20 * math.log10(float(torch.sigmoid(amplitude).median()))
    assert abs(median_gain_db - gain_db) < 3  # not 0.5 (-6 dB), the sigmoid's midpoint
    with pytest.raises(ValueError, match="below 0 dB"):
        tiny_model(decoder_initial_gain_db=0.0)


def test_encoder_input_is_mu_law_companded():
    model = tiny_model(encoder_input_mu=255.0)
    bands = 1e-3 * torch.randn(2, 4, 64)
    companded = torch.sign(bands) * torch.log1p(255 * bands.abs()) / math.log(256)
    torch.testing.assert_close(model.encoder(bands)[0], model.encoder.net(companded).chunk(2, dim=1)[0])
    assert float(companded.abs().mean() / bands.abs().mean()) > 30  # quiet bands lifted ~30 dB
    plain = tiny_model(encoder_input_mu=0.0)
    torch.testing.assert_close(plain.encoder(bands)[0], plain.encoder.net(bands).chunk(2, dim=1)[0])
    with pytest.raises(ValueError, match="input_mu"):
        tiny_model(encoder_input_mu=-1.0)


def test_kl_is_the_textbook_formula():
    mean, scale = torch.tensor([[[0.0, 1.0, 0.0]]]), torch.tensor([[[1.0, 1.0, 2.0]]])
    expected = [0.0, 0.5, 0.5 * (4 - math.log(4) - 1)]
    torch.testing.assert_close(kl_divergence(mean, scale)[0, 0], torch.tensor(expected))
    _, kl = reparametrize(mean, scale)
    assert float(kl) == pytest.approx(sum(expected) / 3)  # summed over Z (1), averaged over frames


def test_beta_warms_up_log_linearly():
    betas = [beta_schedule(step, 1e-3, 0.1, 10) for step in (0, 5, 10, 50)]
    assert betas == pytest.approx([1e-3, 1e-2, 0.1, 0.1])


def test_each_weight_is_applied_once():
    model = tiny_model(adversarial_weight=3.0, feature_matching_weight=7.0)
    terms = {"spectral": torch.tensor(1.0), "adversarial": torch.tensor(2.0), "feature_matching": torch.tensor(5.0),
             "kl": torch.tensor(100.0)}
    assert float(model.generator_loss(terms)) == pytest.approx(1 + 3 * 2 + 7 * 5)
    phase1 = {"spectral": torch.tensor(1.0), "kl": torch.tensor(4.0), "beta": torch.tensor(0.25)}
    assert float(model.generator_loss(phase1)) == pytest.approx(2.0)


def test_phase1_trains_encoder_and_decoder_and_fills_latent_statistics():
    model = tiny_model(phase2_step=100)
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    discriminator_before = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = fit(model, steps=3)
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(discriminator_before, model.discriminator.parameters()))


def test_phase2_freezes_the_encoder_and_counts_one_step_per_batch():
    model = tiny_model(phase2_step=0)
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    decoder_before = [p.detach().clone() for p in model.decoder.parameters()]
    discriminator_before = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = fit(model, steps=3)
    assert trainer.global_step == 3  # the discriminator's updates do not count as steps
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(discriminator_before, model.discriminator.parameters()))


def test_phase2_gives_each_player_the_gradient_of_its_own_loss_only():
    """One discriminator pass serves both losses; the generator's gradient must hold none of the
    discriminator's loss, and the discriminator's none of the generator's."""
    # the hinge terms alone: on fake logits in (-1, 1) the discriminator's loss has exactly the
    # opposite gradient of the generator's, so a leak of it would cancel the generator's gradient
    model = tiny_model(phase2_step=0, gradient_clip=1e9, full_band_weight=0.0, band_weight=0.0,
                       feature_matching_weight=0.0)
    reference = {}
    adversarial_terms, generator_loss = model.adversarial_terms, model.generator_loss

    def gradients(loss, parameters):
        return torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)

    def recorded_adversarial_terms(audio, audio_hat, optimizer):
        # the discriminator's whole loss, from passes of its own (its weights are not updated yet)
        real, fake = model.discriminator(audio), model.discriminator(audio_hat.detach())
        loss = sum(losses.hinge_discriminator_loss(r[0], f[0]) for r, f in zip(real, fake)) / len(real)
        reference["discriminator"] = gradients(loss, list(model.discriminator.parameters()))
        return adversarial_terms(audio, audio_hat, optimizer)

    def recorded_generator_loss(terms):
        loss = generator_loss(terms)
        reference["decoder"] = gradients(loss, list(model.decoder.parameters()))
        return loss

    model.adversarial_terms, model.generator_loss = recorded_adversarial_terms, recorded_generator_loss
    fit(model, steps=1)
    for part in ("discriminator", "decoder"):
        for parameter, expected in zip(getattr(model, part).parameters(), reference[part]):
            if expected is None:
                assert parameter.grad is None or not parameter.grad.any()
            else:  # relative to the tensor's norm: these gradients are ~1e-7, under assert_close's atol
                assert float((parameter.grad - expected).norm()) <= 1e-4 * float(expected.norm()), part
    assert all(p.grad is None for p in model.encoder.parameters())


def test_discriminator_windows_are_aligned_slices_at_random_offsets():
    model = tiny_model(discriminator_crop=100)
    torch.manual_seed(1)
    audio = torch.randn(8, 2, 1000)
    real, generated = model.discriminator_windows(audio, 2 * audio)
    assert real.shape == generated.shape == (8, 2, 100)
    torch.testing.assert_close(generated, 2 * real)  # the same place in both
    offsets = []
    for example in range(8):  # one contiguous slice of each example, all channels alike
        matches = [o for o in range(901) if torch.equal(audio[example, :, o:o + 100], real[example])]
        assert len(matches) == 1
        offsets += matches
    assert len(set(offsets)) > 1
    whole = tiny_model(discriminator_crop=1000).discriminator_windows(audio, 2 * audio)
    assert whole[0] is audio and torch.equal(whole[1], 2 * audio)
    with pytest.raises(ValueError, match="discriminator_crop"):
        tiny_model(discriminator_crop=0)


def test_phase2_with_a_discriminator_crop_judges_windows_and_trains_the_decoder():
    model = tiny_model(phase2_step=0, discriminator_crop=4 * HOP)
    lengths = []
    forward = model.discriminator.forward

    def recording_forward(x):
        lengths.append(x.shape[-1])
        return forward(x)

    model.discriminator.forward = recording_forward
    decoder_before = [p.detach().clone() for p in model.decoder.parameters()]
    fit(model, steps=2)
    assert lengths == [4 * HOP] * 4  # a real and a generated pass per step
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))


def test_non_finite_loss_stops_before_updating():
    model = tiny_model()
    with torch.no_grad():
        next(model.decoder.parameters()).fill_(float("nan"))
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    with pytest.raises(NonFiniteLossError, match="at step 0"):
        fit(model, steps=2)
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))


def test_latent_statistics_match_numpy_pca():
    torch.manual_seed(0)
    mixing = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.1]])
    frames = torch.randn(2000, 3) @ mixing.T + torch.tensor([1.0, -2.0, 0.5])
    statistics = LatentStatistics(3)
    for chunk in frames.split(300):  # batches of [1, Z, L]
        statistics.update(chunk.T.unsqueeze(0))
    mean, components, fidelity = statistics.compute()
    torch.testing.assert_close(mean, frames.mean(0), atol=1e-5, rtol=0)
    covariance = torch.cov(frames.T.double())
    variances, vectors = torch.linalg.eigh(covariance)
    expected_fidelity = (variances.flip(0).cumsum(0) / variances.sum()).float()
    torch.testing.assert_close(fidelity, expected_fidelity, atol=1e-3, rtol=0)
    for k in range(3):  # same directions up to sign
        assert abs(float(components[k].double() @ vectors[:, 2 - k])) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(components @ components.T, torch.eye(3), atol=1e-5, rtol=0)


def test_latent_statistics_survive_tiny_datasets():
    statistics = LatentStatistics(4)
    mean, components, fidelity = statistics.compute()  # no frames at all
    assert torch.equal(components, torch.eye(4)) and fidelity[-1] == 1
    statistics.update(torch.randn(1, 4, 1))
    assert torch.isfinite(statistics.compute()[2]).all()
    statistics.update(torch.randn(1, 4, 2))  # 3 frames: a rank-2 covariance
    mean, components, fidelity = statistics.compute()
    assert torch.isfinite(components).all() and float(fidelity[1]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("target,expected", [(0.5, 1), (0.6, 2), (0.9, 2), (0.95, 3), (1.0, 4)])
def test_latent_size_for_fidelity_has_no_off_by_one(target, expected):
    fidelity = torch.tensor([0.5, 0.9, 0.99, 1.0])
    assert latent_size_for_fidelity(fidelity, target) == expected


def test_validation_fills_latent_buffers_and_they_are_saved(tmp_path):
    model = tiny_model()
    audio = [torch.randn(1, 16 * HOP) * 0.1 for _ in range(4)]
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path, num_sanity_val_steps=0,
                        val_check_interval=1, check_val_every_n_epoch=None)
    trainer.fit(model, DataLoader(audio, batch_size=2), DataLoader(audio, batch_size=2))
    assert float(model.latent_statistics.count) == 4 * 16
    assert not torch.equal(model.latent_pca, torch.eye(4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = RAVE.load_from_checkpoint(path, map_location="cpu")
    torch.testing.assert_close(loaded.latent_pca, model.latent_pca)
    torch.testing.assert_close(loaded.latent_fidelity, model.latent_fidelity)


def test_schedulers_from_config_step_once_per_training_step():
    from functools import partial

    model = tiny_model(phase2_step=2,
                       generator_scheduler=partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
                       discriminator_scheduler=partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5))
    fit(model, steps=4)
    generator, discriminator = model.optimizers()
    assert generator.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5 ** 4)
    assert discriminator.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.5 ** 2)  # phase 2 only


@pytest.mark.parametrize("seed", range(6))
def test_bf16_mixed_precision_trains_both_phases(seed):
    """Seeded over several draws: on Intel CPUs with AMX, oneDNN's bf16 kernels used to read stray
    memory (see rave_ddsp.train.cli.avoid_amx_bf16_kernels), so whether a step gave NaN depended on the draw."""
    torch.manual_seed(seed)
    model = tiny_model(phase2_step=1)
    audio = [0.3 * torch.randn(1, 16 * HOP) for _ in range(4)]
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0, precision="bf16-mixed")
    trainer.fit(model, DataLoader(audio, batch_size=2))
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.slow
def test_bf16_kernels_stay_off_amx():
    """oneDNN reports the ISA it dispatches to; after the guard it must not be AMX (on any CPU)."""
    code = ("from rave_ddsp.train.cli import avoid_amx_bf16_kernels\n"
            "avoid_amx_bf16_kernels()\n"
            "import torch\n"
            "x, w = torch.randn(2, 40, 256), torch.randn(64, 40, 7)\n"
            "with torch.autocast('cpu', dtype=torch.bfloat16):\n"
            "    torch.nn.functional.conv1d(x, w)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**env, "ONEDNN_VERBOSE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    isa = [line for line in result.stdout.splitlines() if ",cpu,isa:" in line or "info,cpu,isa" in line]
    assert isa, result.stdout[-2000:]  # oneDNN ran (and said which ISA it may use)
    assert "AMX" not in isa[0].upper(), isa[0]
    assert os.environ.get("ONEDNN_MAX_CPU_ISA"), "tests/conftest.py applies the guard for the whole suite"


@pytest.mark.parametrize("noise_loss", ["expected", "drawn"])
def test_noise_branch_started_near_the_waveform_gets_gradient(noise_loss):
    model = tiny_model(noise_loss=noise_loss, noise_initial_gain_db=-50.0)
    audio = 0.3 * torch.sin(torch.linspace(0, 300, 32 * HOP)).repeat(2, 1, 1) + 0.02 * torch.randn(2, 1, 32 * HOP)
    bands, mean, _ = model.encode(audio)
    waveform, noise, magnitudes = model.decoder.branches(mean)
    # it starts near the waveform branch's level (10 dB), not 100 dB under it
    assert abs(10 * math.log10(float(noise.pow(2).mean() / waveform.pow(2).mean()))) < 10
    model.spectral_loss(audio, bands, waveform, noise, magnitudes)["spectral"].backward()
    norms = [float(torch.cat([p.grad.flatten() for p in part.parameters()]).norm())
             for part in (model.decoder.noise, model.decoder.head)]
    assert norms[0] > 0.2 * norms[1]  # at the bare -94 dB start (drawn's default) it is 1 %


def test_default_noise_start_follows_the_noise_loss():
    from rave_ddsp.dsp.filtered_noise import exp_sigmoid
    from rave_ddsp.train.model import EXPECTED_NOISE_INITIAL_GAIN_DB

    for noise_loss, start_db in (("expected", EXPECTED_NOISE_INITIAL_GAIN_DB), ("drawn", -94.0)):
        bias = tiny_model(noise_loss=noise_loss).decoder.noise.net[-1].bias.detach()
        # set to the start with expected; drawn keeps the layer's random bias, centred on 0 (-94 dB)
        assert float(20 * torch.log10(exp_sigmoid(bias)).median()) == pytest.approx(start_db, abs=3), noise_loss
    assert tiny_model().hparams.noise_loss == "expected"


def test_noise_shares_are_per_band_and_overall():
    from rave_ddsp.train.model import noise_shares_db

    noise = torch.tensor([1.0, 0.0, 10.0, 1.0, 1.0, 0.0, 10.0, 1.0])  # 2 channels x 4 bands
    output = torch.tensor([10.0, 5.0, 10.0, 100.0, 10.0, 5.0, 10.0, 100.0])
    shares = noise_shares_db(noise, output, n_bands=4)
    assert shares["share_db_band_00"] == pytest.approx(-10.0)
    assert shares["share_db_band_01"] == -200.0
    assert shares["share_db_band_02"] == pytest.approx(0.0)
    assert shares["share_db_band_03"] == pytest.approx(-20.0)
    assert shares["share_db"] == pytest.approx(10 * math.log10(24 / 250))


@pytest.mark.parametrize("noise_loss", ["expected", "drawn"])
def test_both_noise_losses_train(noise_loss):
    model = tiny_model(noise_loss=noise_loss)
    before = [p.detach().clone() for p in model.decoder.noise.parameters()]
    fit(model, steps=2)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.decoder.noise.parameters()))
    with pytest.raises(ValueError, match="noise_loss"):
        tiny_model(noise_loss="typo")
