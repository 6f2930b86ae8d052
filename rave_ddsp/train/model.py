"""The LightningModule: wiring of PQMF, encoder, decoder and discriminators, two-phase training.

Phase 1 (steps ``< phase2_step``): encoder and decoder learn from the multi-scale spectral
distance (full band and PQMF bands) plus ``beta * KL``; ``beta`` rises log-linearly over
``beta_warmup_steps``. The spectral distances judge the noise branch by its expected power
spectrum, computed from the magnitudes it asks for, and on its own against the target's
spectral floor (``noise_loss="expected"``, the default). Judged by one draw of noise instead
(``"drawn"``), which they score worse than a smooth deterministic signal at the same level (its
STFT magnitude is Rayleigh-distributed), a model learns to silence the noise branch (README,
"Two branches").
The latent statistics (mean, PCA, fidelity) are gathered from the
validation set.

Phase 2: the encoder and the latent statistics are frozen; the decoder adds adversarial
and feature-matching losses against the discriminators. Each step runs the generator once
and the discriminator once on the real and once on the generated audio; from these passes
come both players' losses, each differentiated for its own parameters only (the
generator's through the discriminator's input, the discriminator's for its weights), then
both are updated. Scoring the generator with the same discriminator the discriminator's
loss saw (as RAVE does) saves the third pass that re-scoring after its update would cost;
the real pass is differentiated before the generated one is built, so that the two graphs
are never held at once.

A step is one training batch: ``global_step`` counts generator updates only (the
discriminator's optimizer is stepped directly, so it does not advance the counter).
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from rave_ddsp.train import losses
from rave_ddsp.nn.decoder import Decoder
from rave_ddsp.nn.discriminator import CombinedDiscriminator
from rave_ddsp.nn.encoder import VariationalEncoder, kl_divergence, reparametrize
from rave_ddsp.nn.quantizer import ResidualVectorQuantizer, usage_statistics
from rave_ddsp.errors import UserError
from rave_ddsp.train.latent import LatentStatistics, latent_size_for_fidelity
from rave_ddsp.dsp import filtered_noise
from rave_ddsp.dsp.pqmf import PQMF

EXPECTED_NOISE_INITIAL_GAIN_DB = -50.0
"""Where ``noise_loss="expected"`` starts the noise magnitudes when ``noise_initial_gain_db`` is
None: near the waveform head's start. With ``drawn``, None keeps the bare scaling's -94 dB (a
loud start hurts that loss)."""

NOISE_LOSSES = {
    "expected": "the spectral distances see the waveform branch plus the noise branch's expected power spectrum",
    "drawn": "the spectral distances see the waveform branch plus one draw of the noise",
}
"""How the spectral distances judge the noise branch (``noise_loss``)."""

BOTTLENECKS = {
    "vae": "a variational latent: the encoder's posterior, pulled towards N(0, I) by beta * KL",
    "rvq": "discrete codes: residual vector quantization of the encoder's output (rave_ddsp.nn.quantizer)",
}
"""What lies between encoder and decoder (``bottleneck``)."""

ADVERSARIAL_LOSSES = {
    "hinge": (losses.hinge_real_loss, losses.hinge_fake_loss, losses.hinge_generator_loss),
    "least_squares": (losses.least_squares_real_loss, losses.least_squares_fake_loss,
                      losses.least_squares_generator_loss),
}
"""Per ``adversarial_loss``: the discriminator's loss on real audio, on generated audio (their sum is
its loss), and the generator's loss."""


class NonFiniteLossError(UserError):
    """The loss (or a gradient) became NaN or infinite; training stops before any update."""


class RAVE(L.LightningModule):
    """Multiband VAE with a filtered-noise branch, trained in two phases.

    Signal: ``sample_rate``, ``channels`` (C), ``n_bands`` (M, PQMF; 1 disables it),
    ``pqmf_attenuation`` (dB), ``pqmf_taps`` (prototype length; 0: the shortest reaching the
    attenuation, else a shorter, lower-delay bank: see :func:`rave_ddsp.dsp.pqmf.design_prototype`). Architecture: see :class:`VariationalEncoder` and
    :class:`Decoder` for ``hidden_channels``, ``ratios``, ``kernel_size``, ``dilations``,
    ``activation``, ``encoder_input_mu`` (mu-law companding of the encoder's input),
    ``noise_bands``, ``noise_ratios``, ``decoder_initial_gain_db`` (the waveform head's
    starting gain), ``noise_initial_gain_db`` (the noise magnitudes' start; None:
    :data:`EXPECTED_NOISE_INITIAL_GAIN_DB` with ``noise_loss="expected"``, -94 dB with ``drawn``);
    ``latent_size`` (Z); ``causal``
    (no look-ahead: lowest streaming delay); ``lookahead_ms`` (a bound on the streaming delay
    of ``forward``: the finest-rate layers keep their look-ahead, the coarser ones are causal;
    None: every layer centred). Losses: spectral scales (``full_band_ffts``,
    optional ``full_band_mels`` per scale, ``band_ffts``) and weights (``spectral_level_weight``:
    the full-band distance's excess-level term, see :mod:`rave_ddsp.train.losses`); ``noise_loss``
    (:data:`NOISE_LOSSES`: ``expected``, the default, judges the noise branch by its expected
    spectrum, ``drawn`` by one draw of noise); with ``expected``, ``noise_floor_weight`` times
    :class:`rave_ddsp.train.losses.NoiseFloorDistance` (quantile ``noise_floor_quantile``) joins
    the spectral distance; ``beta`` (KL weight
    after warm-up, from ``beta_start``); phase 2 from ``phase2_step`` with
    ``discriminators`` (kinds of :class:`CombinedDiscriminator`; ``discriminator_crop``: they judge
    one window of that many samples per example, at a random place, the same in the real and the
    generated audio, instead of the whole crop; None: the whole crop), ``adversarial_loss``
    (``hinge`` or ``least_squares``), ``adversarial_weight``, ``feature_matching_weight``.
    Bottleneck (:data:`BOTTLENECKS`): ``vae`` (default) or ``rvq``, a
    :class:`rave_ddsp.nn.quantizer.ResidualVectorQuantizer` with ``n_codebooks`` of
    ``codebook_size`` entries looked up in ``codebook_dim`` dimensions, ``quantizer_dropout``,
    ``dead_code_steps``, and the loss weights ``commitment_weight`` and ``codebook_weight`` (which
    replace ``beta * KL``).
    Optimisation: optimizer and scheduler factories (default Adam, lr 1e-4, betas 0.5/0.9,
    constant), ``gradient_clip`` (max L2 norm per optimizer). ``streaming`` builds the
    cached-convolution version used for export.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        channels: int = 1,
        n_bands: int = 16,
        pqmf_attenuation: float = 100.0,
        pqmf_taps: int = 0,
        latent_size: int = 128,
        hidden_channels: Sequence[int] = (64, 128, 256, 512, 512),
        ratios: Sequence[int] = (4, 4, 4, 2),
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 3, 9),
        activation: str = "leaky_relu",
        encoder_input_mu: float = 255.0,
        noise_bands: int = 5,
        noise_ratios: Sequence[int] = (4, 4, 4),
        decoder_initial_gain_db: float = -40.0,
        noise_initial_gain_db: Optional[float] = None,
        noise_loss: str = "expected",
        noise_floor_weight: float = 1.0,
        noise_floor_quantile: float = 0.25,
        bottleneck: str = "vae",
        n_codebooks: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int = 8,
        quantizer_dropout: float = 0.5,
        dead_code_steps: int = 200,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        causal: bool = False,
        lookahead_ms: Optional[float] = None,
        full_band_ffts: Sequence[int] = (2048, 1024, 512, 256, 128),
        full_band_mels: Optional[Sequence[int]] = None,
        band_ffts: Sequence[int] = (256, 128, 64, 32),
        spectral_linear_weight: float = 1.0,
        spectral_log_weight: float = 1.0,
        spectral_level_weight: float = 0.0,
        full_band_weight: float = 1.0,
        band_weight: float = 1.0,
        beta: float = 0.1,
        beta_start: float = 1e-4,
        beta_warmup_steps: int = 20000,
        phase2_step: int = 1000000,
        discriminators: Sequence[str] = ("multi_period", "multi_scale"),
        discriminator_capacity_scale: float = 1.0,
        discriminator_crop: Optional[int] = None,
        adversarial_loss: str = "hinge",
        adversarial_weight: float = 1.0,
        feature_matching_weight: float = 20.0,
        generator_optimizer: Optional[OptimizerCallable] = None,
        discriminator_optimizer: Optional[OptimizerCallable] = None,
        generator_scheduler: Optional[LRSchedulerCallable] = None,
        discriminator_scheduler: Optional[LRSchedulerCallable] = None,
        gradient_clip: float = 1000.0,
        streaming: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        # The factories themselves (under LightningCLI, hparams hold their configuration instead).
        self.optimizer_factories = (generator_optimizer or default_optimizer,
                                    discriminator_optimizer or default_optimizer)
        self.scheduler_factories = (generator_scheduler, discriminator_scheduler)
        if noise_loss not in NOISE_LOSSES:
            raise ValueError(f"noise_loss must be one of {list(NOISE_LOSSES)}, got {noise_loss!r}")
        if bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {list(BOTTLENECKS)}, got {bottleneck!r}")
        if adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {sorted(ADVERSARIAL_LOSSES)}, got {adversarial_loss!r}")
        if discriminator_crop is not None and discriminator_crop < 1:
            raise ValueError(f"discriminator_crop must be a positive number of samples or null, "
                             f"got {discriminator_crop}")
        if noise_initial_gain_db is None and noise_loss == "expected":
            noise_initial_gain_db = EXPECTED_NOISE_INITIAL_GAIN_DB
        band_channels = channels * n_bands
        self.pqmf = PQMF(n_bands, pqmf_attenuation, streaming=streaming, n_taps=pqmf_taps)

        def build(max_centred_period: Optional[int], streaming: bool):
            architecture = dict(channels=hidden_channels, ratios=ratios, kernel_size=kernel_size, dilations=dilations,
                                activation_name=activation, causal=causal, max_centred_period=max_centred_period,
                                streaming=streaming)
            encoder = VariationalEncoder(band_channels, latent_size, **architecture, input_mu=encoder_input_mu,
                                         variational=bottleneck == "vae",
                                         cumulative_delay=self.pqmf.analysis_delay // n_bands)
            decoder = Decoder(band_channels, latent_size, noise_bands=noise_bands, noise_ratios=noise_ratios,
                              initial_gain_db=decoder_initial_gain_db, noise_initial_gain_db=noise_initial_gain_db,
                              **architecture)
            return encoder, decoder

        self.max_centred_period = None if lookahead_ms is None or causal else \
            self.plan_lookahead(lookahead_ms, sample_rate, ratios, lambda period: build(period, False))
        """Layers whose frames span more band frames than this are causal (None: all centred)."""
        self.encoder, self.decoder = build(self.max_centred_period, streaming)
        self.quantizer = ResidualVectorQuantizer(latent_size, n_codebooks, codebook_size, codebook_dim,
                                                 quantizer_dropout, dead_code_steps) if bottleneck == "rvq" else None
        self.discriminator = CombinedDiscriminator(discriminators, channels, discriminator_capacity_scale)
        self.full_band_distance = losses.MultiScaleSTFT(full_band_ffts, linear_weight=spectral_linear_weight,
                                                        log_weight=spectral_log_weight, n_mels=full_band_mels,
                                                        sample_rate=sample_rate, level_weight=spectral_level_weight)
        self.band_distance = losses.MultiScaleSTFT(band_ffts, linear_weight=spectral_linear_weight,
                                                   log_weight=spectral_log_weight)
        # cells as wide as the noise filters' frequency spacing, at the finest full-band scale
        floor_fft = max(full_band_ffts)
        self.noise_floor_distance = losses.NoiseFloorDistance(
            floor_fft, floor_fft // (2 * n_bands * (noise_bands - 1)), noise_floor_quantile)
        self.hop_length = n_bands * math.prod(ratios)
        """Audio samples per latent frame."""
        self.encode_delay, self.decode_delay, self.forward_delay = self.streaming_delays(self.encoder, self.decoder)
        """Streaming delays: of the latents (PQMF analysis included) in latent frames, of decoding
        (PQMF synthesis included) and of the whole autoencoder, in audio samples."""
        self.register_buffer("latent_mean", torch.zeros(latent_size))
        self.register_buffer("latent_pca", torch.eye(latent_size))
        self.register_buffer("latent_fidelity", torch.arange(1, latent_size + 1) / latent_size)
        self.latent_statistics = LatentStatistics(latent_size)
        self._noise_bases: Dict[Tuple[int, int, bool, str], Tensor] = {}
        self.validation_noise_energy = torch.zeros(channels * n_bands, dtype=torch.float64)
        self.validation_output_energy = torch.zeros(channels * n_bands, dtype=torch.float64)
        self.validation_kl = torch.zeros(latent_size, dtype=torch.float64)
        self.validation_codes = torch.zeros(n_codebooks, codebook_size, dtype=torch.float64)
        self.validation_examples: Dict[str, Tensor] = {}

    def streaming_delays(self, encoder: nn.Module, decoder: nn.Module) -> Tuple[int, int, int]:
        """``(encode, decode, forward)`` streaming delays with this encoder and decoder: latent
        frames, audio samples, audio samples."""
        n_bands = self.hparams.n_bands
        encode = encoder.cumulative_delay
        decode = decoder.cumulative_delay * n_bands + self.pqmf.synthesis_delay
        return encode, decode, encode * n_bands * math.prod(self.hparams.ratios) + decode

    def plan_lookahead(self, lookahead_ms: float, sample_rate: int, ratios: Sequence[int], build) -> int:
        """The largest ``max_centred_period`` whose streaming delay of ``forward`` fits ``lookahead_ms``.

        Candidates are the frame periods of the layers (1, r1, r1 r2, ...), finest first kept
        centred; 0 makes every layer causal. :class:`UserError` if even that does not fit.
        """
        budget = lookahead_ms * sample_rate / 1000.0
        periods = [math.prod(ratios[:i]) for i in range(len(ratios), -1, -1)] + [0]  # coarsest first
        for period in periods:
            with torch.random.fork_rng(devices=[]):  # trial builds leave the weight initialisation's draws alone
                delay = self.streaming_delays(*build(period))[2]
            if delay <= budget:
                return period
        raise UserError(f"model.lookahead_ms {lookahead_ms:g}: even a fully causal model delays {delay} samples "
                        f"({1000.0 * delay / sample_rate:.1f} ms, the PQMF and the frame alignment); "
                        "raise the budget or shorten the hop")

    # ------------------------------------------------------------------ model --
    def in_phase2(self) -> bool:
        return self.global_step >= self.hparams.phase2_step

    def beta(self) -> float:
        hp = self.hparams
        return beta_schedule(self.global_step, hp.beta_start, hp.beta, hp.beta_warmup_steps)

    def encode(self, audio: Tensor):
        """``audio [B, C, T] -> (bands [B, C*M, T/M], mean [B, Z, L], scale [B, Z, L])``."""
        if audio.shape[-1] % self.hop_length:
            raise ValueError(f"audio length {audio.shape[-1]} is not a multiple of the hop length {self.hop_length}")
        with torch.autocast(audio.device.type, enabled=False):  # the filter bank's 117 dB need float32
            bands = self.pqmf(audio.float())
        mean, scale = self.encoder(bands)
        return bands, mean, scale

    @property
    def discrete(self) -> bool:
        return self.quantizer is not None

    @property
    def bitrate(self) -> float:
        """Bits per second of the codes with every codebook (0 for a variational model)."""
        if self.quantizer is None:
            return 0.0
        return self.quantizer.bits_per_frame * self.hparams.sample_rate / self.hop_length

    def bottleneck(self, mean: Tensor, scale: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The latent the decoder gets and the bottleneck's loss terms: a posterior sample and
        ``kl`` (vae), or the quantized encoder output, ``commitment`` and ``codebook`` (rvq;
        quantizer dropout and dead-code restarts in training mode)."""
        if self.quantizer is None:
            z, kl = reparametrize(mean, scale)
            return z, {"kl": kl}
        z, _, commitment, codebook = self.quantizer(mean)
        return z, {"commitment": commitment, "codebook": codebook}

    def latent(self, mean: Tensor) -> Tensor:
        """The deterministic latent of an encoding: the posterior mean, or its quantization (all codebooks)."""
        if self.quantizer is None:
            return mean
        training = self.quantizer.training
        self.quantizer.eval()
        try:
            return self.quantizer(mean)[0]
        finally:
            self.quantizer.train(training)

    def decode(self, z: Tensor):
        """``z [B, Z, L] -> (audio [B, C, T], bands [B, C*M, T/M])``."""
        waveform, noise = self.decoder(z)
        bands = (waveform + noise).float()
        return self.synthesize(bands), bands

    def synthesize(self, bands: Tensor) -> Tensor:
        """PQMF synthesis in float32: ``[B, C*M, T/M] -> [B, C, T]``."""
        with torch.autocast(bands.device.type, enabled=False):
            return self.pqmf.inverse(bands.float())

    def forward(self, audio: Tensor) -> Tensor:
        """Deterministic reconstruction (posterior mean): ``[B, C, T] -> [B, C, T]``."""
        _, mean, _ = self.encode(audio)
        return self.decode(self.latent(mean))[0]

    def spectral_loss(self, audio: Tensor, bands: Tensor, waveform: Tensor, noise: Tensor,
                      magnitudes: Tensor) -> Dict[str, Tensor]:
        """The spectral distances of the decoder's branches (``waveform``, ``noise`` band signals
        ``[B, C*M, T/M]``, noise ``magnitudes [B, C*M, L, K]``) from the target ``audio`` and its
        ``bands``, the noise judged as ``noise_loss`` says (:data:`NOISE_LOSSES`)."""
        hp = self.hparams
        if hp.noise_loss == "drawn":
            bands_hat = (waveform + noise).float()
            full_band_power = band_power = None
        else:
            bands_hat = waveform.float()
            full_band_power, band_power = self.expected_noise_power(magnitudes)
        terms = {"full_band": self.full_band_distance(audio, self.synthesize(bands_hat), full_band_power)}
        if hp.n_bands > 1 and hp.band_weight:
            terms["bands"] = self.band_distance(bands, bands_hat, band_power)
        if full_band_power is not None and hp.noise_floor_weight:
            terms["noise_floor"] = self.noise_floor_distance(audio, full_band_power)
        terms["spectral"] = (hp.full_band_weight * terms["full_band"] + hp.band_weight * terms.get("bands", 0.0)
                             + hp.noise_floor_weight * terms.get("noise_floor", 0.0))
        return terms

    def expected_noise_power(self, magnitudes: Tensor):
        """``(full_band(n_fft, hop), bands(n_fft, hop))``: the noise branch's expected STFT power
        (:func:`rave_ddsp.dsp.filtered_noise.expected_stft_power`) of the audio ``[B*C, F, frames]``
        and of the band signals ``[B*C*M, F, frames]``, as the spectral distances want them."""
        batch, n_bands = magnitudes.shape[0], self.hparams.n_bands
        responses = filtered_noise.impulse_response(magnitudes.float())  # [B, C*M, L, N]
        frame_size = self.decoder.noise.frame_size

        def full_band(n_fft: int, hop: int) -> Tensor:
            per_channel = responses.reshape(batch, -1, n_bands, *responses.shape[-2:])  # [B, C, M, L, N]
            basis = self.noise_basis(n_fft, responses.shape[-1], full_band=True)
            return filtered_noise.expected_stft_power(per_channel, frame_size, n_fft, hop, basis).flatten(0, 1)

        def bands(n_fft: int, hop: int) -> Tensor:
            basis = self.noise_basis(n_fft, responses.shape[-1], full_band=False)
            return filtered_noise.expected_stft_power(responses, frame_size, n_fft, hop, basis).flatten(0, 1)

        return full_band, bands

    def noise_basis(self, n_fft: int, n_taps: int, full_band: bool) -> Tensor:
        """:func:`rave_ddsp.dsp.filtered_noise.noise_spectral_basis` for the audio (through this
        model's PQMF synthesis) or for the band signals, cached per scale and device."""
        key = (n_fft, n_taps, full_band, str(self.pqmf.synthesis_kernel.device))
        if key not in self._noise_bases:
            gains = None
            if full_band and self.hparams.n_bands > 1:
                grid = filtered_noise.density_grid(n_fft, self.pqmf.n_taps + self.hparams.n_bands * n_taps)
                gains = self.pqmf.synthesis_power_responses(grid)
            basis = filtered_noise.noise_spectral_basis(n_fft, n_taps, gains)
            self._noise_bases[key] = basis.to(self.pqmf.synthesis_kernel.device)
        return self._noise_bases[key]

    # --------------------------------------------------------------- training --
    def configure_optimizers(self):
        generator_parameters = list(self.encoder.parameters()) + list(self.decoder.parameters())
        if self.quantizer is not None:
            generator_parameters += list(self.quantizer.parameters())
        optimizers = [factory(parameters) for factory, parameters in
                      zip(self.optimizer_factories, (generator_parameters, self.discriminator.parameters()))]
        schedulers = [factory(optimizer) for factory, optimizer in zip(self.scheduler_factories, optimizers) if factory]
        if schedulers and len(schedulers) != 2:
            raise UserError("give both generator_scheduler and discriminator_scheduler, or neither")
        return optimizers, schedulers

    def training_step(self, audio: Tensor, batch_index: int) -> None:
        generator_optimizer, discriminator_optimizer = self.optimizers()
        phase2 = self.in_phase2()
        self.encoder.requires_grad_(not phase2)
        if self.quantizer is not None:  # part of the encoder: frozen in phase 2, codes kept as they are
            self.quantizer.requires_grad_(not phase2)
            self.quantizer.dead_code_steps = 0 if phase2 else self.hparams.dead_code_steps
        with torch.set_grad_enabled(not phase2):
            bands, mean, scale = self.encode(audio)
            z, bottleneck_terms = self.bottleneck(mean, scale)
        waveform, noise, magnitudes = self.decoder.branches(z)
        terms = self.spectral_loss(audio, bands, waveform, noise, magnitudes)
        terms.update(bottleneck_terms)
        if phase2:
            real, generated = self.discriminator_windows(audio, self.synthesize(waveform + noise))
            terms.update(self.adversarial_terms(real, generated, discriminator_optimizer))
        elif "kl" in terms:
            terms["beta"] = torch.tensor(self.beta())
        loss = self.generator_loss(terms)
        self.check_finite(loss, "generator loss")
        generator_optimizer.zero_grad()
        if phase2:  # the generator's gradient only (none for the discriminator), the graph kept for its loss
            self.manual_backward(loss, inputs=trainable(generator_optimizer), retain_graph=True)
            self.discriminator_step(terms["discriminator"], discriminator_optimizer)
        else:
            self.manual_backward(loss)
        terms["grad_norm_generator"] = self.clip_and_check(generator_optimizer, "generator")
        generator_optimizer.step()
        schedulers = self.lr_scheduler_list()
        if schedulers:
            schedulers[0].step()
        logs = {f"train/{name}": value for name, value in terms.items()}
        logs.update({"train/loss": loss, "lr/generator": generator_optimizer.param_groups[0]["lr"]})
        self.log_dict(logs)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("spectral", terms["spectral"], prog_bar=True, logger=False)

    def generator_loss(self, terms: Dict[str, Tensor]) -> Tensor:
        """The loss the generator minimises; each weight is applied here, once.

        Phase 1: ``spectral + beta * kl`` (vae) or ``spectral + commitment_weight * commitment
        + codebook_weight * codebook`` (rvq). Phase 2 (terms hold ``adversarial``):
        ``spectral + adversarial_weight * adversarial + feature_matching_weight * feature_matching``.
        """
        hp = self.hparams
        if "adversarial" in terms:
            return (terms["spectral"] + hp.adversarial_weight * terms["adversarial"]
                    + hp.feature_matching_weight * terms["feature_matching"])
        if "kl" in terms:
            return terms["spectral"] + terms["beta"] * terms["kl"]
        return terms["spectral"] + hp.commitment_weight * terms["commitment"] + hp.codebook_weight * terms["codebook"]

    def discriminator_windows(self, audio: Tensor, audio_hat: Tensor) -> Tuple[Tensor, Tensor]:
        """What the discriminators judge of ``audio`` and ``audio_hat [B, C, T]``: the whole of both, or
        with ``discriminator_crop`` shorter than T one window ``[B, C, crop]`` per example, at a random
        offset that is the same in both (feature matching compares aligned features)."""
        crop, (batch, channels, length) = self.hparams.discriminator_crop, audio.shape
        if crop is None or crop >= length:
            return audio, audio_hat
        offsets = torch.randint(0, length - crop + 1, (batch, 1, 1), device=audio.device)
        index = (offsets + torch.arange(crop, device=audio.device)).expand(batch, channels, crop)
        return audio.gather(-1, index), audio_hat.gather(-1, index)

    def adversarial_terms(self, audio: Tensor, audio_hat: Tensor, optimizer) -> Dict[str, Tensor]:
        """The discriminator's loss and the generator's ``adversarial`` and ``feature_matching``
        terms, from one pass of the discriminator over the real ``audio`` and one over ``audio_hat``
        (attached to the generator's graph): both players judged by the same discriminator.

        The real pass is differentiated at once, into the discriminator's gradient (``optimizer``'s
        parameters, zeroed first), so that its graph is freed before the generated pass is built:
        ``discriminator`` is then that term's value plus the generated-audio term, whose gradient
        :meth:`discriminator_step` adds.
        """
        real_loss_fn, fake_loss_fn, generator_loss_fn = ADVERSARIAL_LOSSES[self.hparams.adversarial_loss]
        real_outputs = self.discriminator(audio)
        count = len(real_outputs)
        real_loss = sum(real_loss_fn(logits) for logits, _ in real_outputs) / count
        optimizer.zero_grad()
        self.manual_backward(real_loss, inputs=trainable(optimizer))
        real_features = [[feature.detach() for feature in features] for _, features in real_outputs]
        del real_outputs
        fake_outputs = self.discriminator(audio_hat)
        return {
            "discriminator": real_loss.detach() + sum(fake_loss_fn(logits) for logits, _ in fake_outputs) / count,
            "adversarial": sum(generator_loss_fn(logits) for logits, _ in fake_outputs) / count,
            "feature_matching": sum(losses.feature_matching_loss(real, fake)
                                    for real, (_, fake) in zip(real_features, fake_outputs)) / count,
        }

    def discriminator_step(self, loss: Tensor, optimizer) -> None:
        """The discriminator's update: adds the gradient of ``loss`` (its generated-audio term; the
        real-audio term's is already there) for its parameters only, not the generator's, then steps."""
        self.check_finite(loss, "discriminator loss")
        self.manual_backward(loss, inputs=trainable(optimizer))
        self.log("train/grad_norm_discriminator", self.clip_and_check(optimizer, "discriminator"))
        optimizer.optimizer.step()  # the raw optimizer: a discriminator update is not a training step
        schedulers = self.lr_scheduler_list()
        if schedulers:
            schedulers[1].step()
        self.log("lr/discriminator", optimizer.param_groups[0]["lr"])

    def lr_scheduler_list(self):
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    def check_finite(self, value: Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"the {what} became {float(value)} at step {self.global_step}; training stopped before updating "
                "the weights. The last checkpoint saved before this step is intact: lower the learning rate or "
                "check the data for silence/clipping, then resume with --ckpt_path last")

    def clip_and_check(self, optimizer, name: str) -> Tensor:
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.hparams.gradient_clip)
        self.check_finite(norm, f"{name} gradient norm")
        return norm

    # ------------------------------------------------------------- validation --
    def on_validation_epoch_start(self) -> None:
        self.latent_statistics.reset()
        self.validation_kl = torch.zeros(self.hparams.latent_size, dtype=torch.float64)
        self.validation_codes = torch.zeros(self.hparams.n_codebooks, self.hparams.codebook_size, dtype=torch.float64)
        self.validation_examples = {}
        bands = self.hparams.channels * self.hparams.n_bands
        self.validation_noise_energy = torch.zeros(bands, dtype=torch.float64)
        self.validation_output_energy = torch.zeros(bands, dtype=torch.float64)

    def validation_step(self, audio: Tensor, batch_index: int) -> None:
        bands, mean, scale = self.encode(audio)
        z = mean
        if self.quantizer is not None:
            z, codes, _, _ = self.quantizer(mean)  # eval mode: every codebook
            for i in range(codes.shape[1]):
                self.validation_codes[i] += torch.bincount(codes[:, i].flatten(), minlength=self.hparams.codebook_size
                                                           ).double().cpu()
        waveform, noise, magnitudes = self.decoder.branches(z)
        terms = self.spectral_loss(audio, bands, waveform, noise, magnitudes)
        self.log_dict({f"validation/{name}": value for name, value in terms.items()}, sync_dist=True)
        self.validation_noise_energy += noise.float().pow(2).sum((0, 2)).double().cpu()  # [C*M]
        self.validation_output_energy += (waveform + noise).float().pow(2).sum((0, 2)).double().cpu()
        audio_hat = self.synthesize(waveform + noise)
        self.log("val_spectral", terms["spectral"], prog_bar=True, logger=False, sync_dist=True)
        self.latent_statistics.update(z)
        if self.quantizer is None:
            self.validation_kl += kl_divergence(mean, scale).sum((0, 2)).double().cpu()  # [Z], summed over frames
        if batch_index == 0:
            self.validation_examples = {"audio": audio[:4].detach().float().cpu(),
                                        "reconstruction": audio_hat[:4].detach().float().cpu(),
                                        "noise": self.synthesize(noise[:4]).detach().float().cpu()}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        statistics = self.latent_statistics.state().to(self.device)
        statistics = self.trainer.strategy.reduce(statistics, reduce_op="sum")
        self.latent_statistics.load_state(statistics)
        if not self.in_phase2():  # phase 2 freezes the encoder, and so its statistics
            mean, components, fidelity = self.latent_statistics.compute()
            self.latent_mean.copy_(mean)
            self.latent_pca.copy_(components)
            self.latent_fidelity.copy_(fidelity)
        for fidelity in (0.9, 0.95, 0.99):
            self.log(f"latent/dimensions_for_fidelity_{fidelity}",
                     float(latent_size_for_fidelity(self.latent_fidelity, fidelity)))
        self.log("latent/frames", float(self.latent_statistics.count))
        if self.quantizer is not None:
            counts = self.trainer.strategy.reduce(self.validation_codes.to(self.device), reduce_op="sum").cpu()
            perplexity, used = usage_statistics(counts)
            for i in range(counts.shape[0]):
                self.log(f"codebook/perplexity_{i:02d}", float(perplexity[i]))
                self.log(f"codebook/usage_{i:02d}", float(used[i]))
            self.log("codebook/perplexity_over_size", float(perplexity.mean()) / self.hparams.codebook_size)
        for name, share in noise_shares_db(self.validation_noise_energy, self.validation_output_energy,
                                           self.hparams.n_bands).items():
            self.log(f"noise/{name}", share)


def noise_shares_db(noise_energy: Tensor, output_energy: Tensor, n_bands: int) -> Dict[str, float]:
    """The noise branch's share of the decoder's output energy, in dB
    (:func:`rave_ddsp.dsp.filtered_noise.share_db`): ``share_db`` over all bands and
    ``share_db_band_00`` ... per PQMF band (channels summed), from per-band-signal energies ``[C*M]``."""
    noise, output = noise_energy.reshape(-1, n_bands).sum(0), output_energy.reshape(-1, n_bands).sum(0)  # [M]
    per_band = filtered_noise.share_db(noise, output).tolist()
    return {"share_db": float(filtered_noise.share_db(noise.sum(), output.sum())),
            **{f"share_db_band_{b:02d}": share for b, share in enumerate(per_band)}}


def trainable(optimizer) -> List[Tensor]:
    """The parameters of ``optimizer`` that require a gradient (the encoder's do not in phase 2)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def beta_schedule(step: int, start: float, end: float, warmup_steps: int) -> float:
    """KL weight at ``step``: log-linear from ``start`` to ``end`` over ``warmup_steps``, then ``end``."""
    progress = min(1.0, step / max(1, warmup_steps))
    return math.exp(math.log(start) + progress * (math.log(end) - math.log(start)))


def default_optimizer(parameters) -> torch.optim.Optimizer:
    """Adam with lr 1e-4 and betas (0.5, 0.9), the usual choice for GAN vocoders."""
    return torch.optim.Adam(parameters, lr=1e-4, betas=(0.5, 0.9))
