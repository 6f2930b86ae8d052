"""TorchScript export for nn~ (Max/MSP, Pure Data): the wrapper module and the build function.

The exported module follows nn~'s contract (see tools/nn_client/README.md):

* methods ``encode`` (audio -> latent), ``decode`` (latent -> audio) and ``forward``
  (both), each with a ``<method>_params`` buffer ``[in_channels, in_ratio, out_channels,
  out_ratio]``, input/output labels, listed by ``get_methods()``;
* attributes listed by ``get_attributes()``, each with ``<attr>_params`` (nn~ type ids:
  0 bool, 1 int, 2 float), ``set_<attr>(...) -> int`` (0 accepted, -1 refused) and
  ``get_<attr>() -> list``;
* ``get_sample_rate()`` / ``set_sample_rate(int)``.

Latents are PCA coordinates: ``encode`` returns the first ``latent_size`` principal
components of the (sampled, or with temperature 0 the mean) posterior; ``decode`` takes
that many, fills the dropped ones with the mean and rotates back.

With ``streaming=True`` the convolutions, the PQMF and the noise branch keep their state
between calls, so buffer-by-buffer output equals one-call output, and equals the
non-streaming export delayed by ``forward_delay`` samples. The noise branch reads a fixed
noise table by time, so both comparisons are exact.
"""
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cached_conv as cc
import cached_conv.convs as cc_convs
import torch
from torch import Tensor, nn

from rave_ddsp.train.checkpoint import read_checkpoint
from rave_ddsp.files import atomic_path
from rave_ddsp.errors import UserError
from rave_ddsp.train.latent import latent_size_for_fidelity
from rave_ddsp.nn.layers import CachedConv1d, remove_weight_norm
from rave_ddsp.train.model import RAVE

MAX_VOICES = cc.MAX_BATCH_SIZE
"""Largest batch (mc.nn~ voices) a streaming export keeps state for (cached_conv's limit)."""
FLOAT_TYPE = 2
INT_TYPE = 1


class ExportedModel(nn.Module):
    """The module nn~ loads. Build it with :func:`build` (it needs a warm-up call before scripting).

    Shapes: ``encode [B, C, T] -> [B, Z', T / hop]``, ``decode [B, Z', L] -> [B, C, L * hop]``,
    ``forward [B, C, T] -> [B, C, T]``, with ``Z'`` the latent size kept.
    """

    def __init__(self, model: RAVE, latent_size: int, channels: Optional[int] = None):
        super().__init__()
        hp = model.hparams
        channels = channels or hp.channels
        if channels != hp.channels and hp.channels != 1:
            raise UserError(f"the model has {hp.channels} channels; it can only be exported with {hp.channels} "
                            "(a mono model can be exported with any number, each channel coded independently)")
        self.pqmf, self.encoder, self.decoder = model.pqmf, model.encoder, model.decoder
        self.decoder.noise.deterministic = True
        self.channels: int = channels
        self.model_channels: int = hp.channels
        self.fold: int = channels // hp.channels
        """Channels coded independently by a mono model, folded into the batch."""
        self.latent_size: int = latent_size
        self.full_latent_size: int = hp.latent_size
        self.hop_length: int = model.hop_length
        self.sample_rate: int = hp.sample_rate
        self.host_sample_rate: int = hp.sample_rate
        self.streaming: bool = hp.streaming
        # forward's noise lags decode's by the encoder's delay (band samples); applied at its first call
        self.forward_noise_shift: int = model.encode_delay * math.prod(hp.ratios) if hp.streaming else 0
        self.noise_aligned: bool = False
        self.register_buffer("latent_mean", model.latent_mean.clone())
        self.register_buffer("latent_pca", model.latent_pca.clone())  # [Z, Z], rows = components
        c, z, hop = channels, latent_size * self.fold, model.hop_length
        self.register_buffer("encode_params", torch.tensor([c, 1, z, hop]))
        self.register_buffer("decode_params", torch.tensor([z, hop, c, 1]))
        self.register_buffer("forward_params", torch.tensor([c, 1, c, 1]))
        audio_labels = [f"(signal) channel {i}" for i in range(c)]
        latent_labels = [f"(signal) latent {i}" for i in range(latent_size)]
        if self.fold > 1:
            latent_labels = [f"(signal) channel {k} latent {i}" for k in range(c) for i in range(latent_size)]
        self.encode_input_labels: List[str] = audio_labels
        self.encode_output_labels: List[str] = latent_labels
        self.decode_input_labels: List[str] = latent_labels
        self.decode_output_labels: List[str] = audio_labels
        self.forward_input_labels: List[str] = audio_labels
        self.forward_output_labels: List[str] = audio_labels
        # performer attributes
        self.temperature: float = 0.0
        self.noise_level: float = 1.0
        self.register_buffer("latent_bias", torch.zeros(latent_size))  # per PCA dimension, all channels alike
        self.register_buffer("latent_scale", torch.ones(latent_size))
        self.bias_dimension: int = 0
        self.scale_dimension: int = 0
        self.register_buffer("temperature_params", torch.tensor([FLOAT_TYPE]))
        self.register_buffer("noise_level_params", torch.tensor([FLOAT_TYPE]))
        self.register_buffer("latent_bias_params", torch.tensor([INT_TYPE, FLOAT_TYPE]))
        self.register_buffer("latent_scale_params", torch.tensor([INT_TYPE, FLOAT_TYPE]))

    # ------------------------------------------------------------- methods --
    @torch.jit.export
    def encode(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, Z', T / hop]`` PCA coordinates of the latent (``[B, C*Z', L]`` when folding)."""
        batch = audio.shape[0]
        audio = audio.reshape(batch * self.fold, self.model_channels, audio.shape[-1])  # [B*fold, C_model, T]
        bands = self.pqmf(audio)  # [B, C*M, T/M]
        mean, scale = self.encoder(bands)  # [B, Z, L] each
        z = self.bottleneck(mean, scale)
        centred = z - self.latent_mean[:, None]  # [B, Z, L]
        latent = torch.matmul(self.latent_pca[: self.latent_size], centred)  # [B*fold, Z', L]
        return latent.reshape(batch, self.fold * self.latent_size, latent.shape[-1])  # [B, fold*Z', L]

    def bottleneck(self, mean: Tensor, scale: Tensor) -> Tensor:
        """The latent of the posterior ``(mean, scale)``: the mean, or a sample at ``temperature``."""
        if self.temperature > 0:
            return mean + self.temperature * scale * torch.randn_like(scale)
        return mean

    @torch.jit.export
    def decode(self, latent: Tensor) -> Tensor:
        """``[B, Z', L] -> [B, C, L * hop]``; ``latent_scale`` and ``latent_bias`` applied first."""
        batch = latent.shape[0]
        latent = latent.reshape(batch * self.fold, self.latent_size, latent.shape[-1])  # [B*fold, Z', L]
        latent = latent * self.latent_scale[:, None] + self.latent_bias[:, None]  # [B*fold, Z', L]
        z = torch.matmul(self.latent_pca[: self.latent_size].T, latent) + self.latent_mean[:, None]  # [B, Z, L]
        return self.synthesize(z, batch)

    def synthesize(self, z: Tensor, batch: int) -> Tensor:
        """Decoder and PQMF synthesis: ``z [B*fold, Z, L] -> [B, C, L * hop]``."""
        waveform, noise = self.decoder(z)  # [B*fold, C_model*M, T/M] each
        audio = self.pqmf.inverse(waveform + self.noise_level * noise)  # [B*fold, C_model, T]
        return audio.reshape(batch, self.channels, audio.shape[-1])

    def forward(self, audio: Tensor) -> Tensor:
        if not self.noise_aligned:
            # The decoder's noise table position assumes undelayed latents; through the
            # streaming encoder they arrive later, and the noise must wait as long.
            self.decoder.noise.position.sub_(self.forward_noise_shift)
            self.noise_aligned = True
        return self.decode(self.encode(audio))

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return ["encode", "decode", "forward"]

    # ---------------------------------------------------------- sample rate --
    @torch.jit.export
    def get_sample_rate(self) -> int:
        return self.sample_rate

    @torch.jit.export
    def set_sample_rate(self, sample_rate: int) -> int:
        """nn~ reports its host rate; the model runs at whatever rate it is fed."""
        self.host_sample_rate = sample_rate
        return 0

    # ----------------------------------------------------------- attributes --
    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return ["temperature", "noise_level", "latent_bias", "latent_scale"]

    @torch.jit.export
    def set_temperature(self, value: float) -> int:
        """0: deterministic (posterior mean); 1: sample the posterior as in training."""
        if value < 0 or not math.isfinite(value):
            return -1
        self.temperature = value
        return 0

    @torch.jit.export
    def get_temperature(self) -> List[float]:
        return [self.temperature]

    @torch.jit.export
    def set_noise_level(self, value: float) -> int:
        """Gain of the filtered-noise branch (1: as trained, 0: none)."""
        if value < 0 or not math.isfinite(value):
            return -1
        self.noise_level = value
        return 0

    @torch.jit.export
    def get_noise_level(self) -> List[float]:
        return [self.noise_level]

    @torch.jit.export
    def set_latent_bias(self, dimension: int, value: float) -> int:
        """Add ``value`` to latent (PCA) dimension ``dimension`` before decoding."""
        if dimension < 0 or dimension >= self.latent_size or not math.isfinite(value):
            return -1
        self.latent_bias[dimension] = value
        self.bias_dimension = dimension
        return 0

    @torch.jit.export
    def get_latent_bias(self) -> Tuple[int, float]:
        """``(dimension, bias)`` of the dimension set last."""
        return self.bias_dimension, float(self.latent_bias[self.bias_dimension])

    @torch.jit.export
    def set_latent_scale(self, dimension: int, value: float) -> int:
        """Multiply latent (PCA) dimension ``dimension`` by ``value`` before decoding."""
        if dimension < 0 or dimension >= self.latent_size or not math.isfinite(value):
            return -1
        self.latent_scale[dimension] = value
        self.scale_dimension = dimension
        return 0

    @torch.jit.export
    def get_latent_scale(self) -> Tuple[int, float]:
        """``(dimension, scale)`` of the dimension set last."""
        return self.scale_dimension, float(self.latent_scale[self.scale_dimension])


class DiscreteExportedModel(ExportedModel):
    """The export of a discrete (``bottleneck: rvq``) model: :class:`ExportedModel` whose ``encode``
    returns the *quantized* latent (so every patch written for continuous latents works), plus

    * ``encode_codes [B, C, T] -> [B, N, T / hop]``: the code of each codebook per latent frame,
      integers held in floats (nn~ passes signals as floats); all ``N`` codebooks, since the
      first ``k`` codes of a residual chain do not depend on the others;
    * ``decode_codes [B, N, L] -> [B, C, L * hop]``: codes rounded to the nearest integer and
      clamped to the codebook (a live signal is never refused in the audio thread; the scripts
      refuse bad codes with a message). Only the first ``codebooks`` are used.

    Attribute ``codebooks`` (int, 1..N): how many codebooks ``encode``, ``forward`` and
    ``decode_codes`` use: the bitrate, ``codebooks * log2(codebook_size) * frame rate``.
    ``temperature`` has no meaning without a posterior and is not listed.
    """

    def __init__(self, model: RAVE, latent_size: int, channels: Optional[int] = None):
        super().__init__(model, latent_size, channels)
        self.quantizer = model.quantizer
        self.n_codebooks: int = model.quantizer.n_codebooks
        self.codebook_size: int = model.quantizer.codebook_size
        self.codebooks: int = self.n_codebooks
        c, n, hop = self.channels, self.n_codebooks * self.fold, model.hop_length
        self.register_buffer("encode_codes_params", torch.tensor([c, 1, n, hop]))
        self.register_buffer("decode_codes_params", torch.tensor([n, hop, c, 1]))
        code_labels = [f"(signal) codebook {i}" for i in range(self.n_codebooks)]
        if self.fold > 1:
            code_labels = [f"(signal) channel {k} codebook {i}" for k in range(c) for i in range(self.n_codebooks)]
        self.encode_codes_input_labels: List[str] = self.encode_input_labels
        self.encode_codes_output_labels: List[str] = code_labels
        self.decode_codes_input_labels: List[str] = code_labels
        self.decode_codes_output_labels: List[str] = self.decode_output_labels
        self.register_buffer("codebooks_params", torch.tensor([INT_TYPE]))

    def bottleneck(self, mean: Tensor, scale: Tensor) -> Tensor:
        return self.quantizer(mean, self.codebooks)[0]

    @torch.jit.export
    def encode_codes(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, N, T / hop]`` codes (``[B, C*N, L]`` when folding), as floats."""
        batch = audio.shape[0]
        audio = audio.reshape(batch * self.fold, self.model_channels, audio.shape[-1])
        mean, _ = self.encoder(self.pqmf(audio))
        codes = self.quantizer(mean)[1]  # [B*fold, N, L]
        return codes.to(audio.dtype).reshape(batch, self.fold * self.n_codebooks, codes.shape[-1])

    @torch.jit.export
    def decode_codes(self, codes: Tensor) -> Tensor:
        """``[B, N, L] -> [B, C, L * hop]`` from the first ``codebooks`` codes."""
        batch = codes.shape[0]
        codes = codes.reshape(batch * self.fold, self.n_codebooks, codes.shape[-1])
        codes = torch.round(codes).clamp(0, self.codebook_size - 1).long()
        return self.synthesize(self.quantizer.decode(codes[:, : self.codebooks]), batch)

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return ["encode", "decode", "forward", "encode_codes", "decode_codes"]

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return ["noise_level", "latent_bias", "latent_scale", "codebooks"]

    @torch.jit.export
    def set_codebooks(self, value: int) -> int:
        """Codebooks used (1..N): fewer is a lower bitrate."""
        if value < 1 or value > self.n_codebooks:
            return -1
        self.codebooks = value
        return 0

    @torch.jit.export
    def get_codebooks(self) -> List[int]:
        return [self.codebooks]


# ------------------------------------------------------------------------ building --
def nn_tilde_buffering(buffer: int, hop: int) -> Tuple[int, int]:
    """``(buffer nn~ uses, samples its buffering adds)`` for nn~'s buffer argument ``buffer`` and a
    model of hop ``hop``.

    nn~ 1.6 raises a buffer below the hop (or 0) to the hop and rounds others up to a power of
    two. With a buffer argument it runs the model on a compute thread: a buffer of input fills
    while the previous one is computed, so its output comes two buffers after its input; with 0
    it computes in the audio callback, one buffer (the hop) after.
    """
    used = hop if buffer < hop else 1 << (buffer - 1).bit_length()
    return used, used if buffer == 0 else 2 * used


@dataclass
class ExportSummary:
    """What :func:`export` wrote."""

    path: Path
    streaming: bool
    sample_rate: int
    channels: int
    hop_length: int
    latent_size: int
    full_latent_size: int
    fidelity: float
    delay: int
    """Samples between input and output of ``forward`` (streaming exports; 0 otherwise)."""
    size_bytes: int
    methods: Dict[str, List[int]]
    """``<method>_params``: in channels, in ratio, out channels, out ratio."""
    attributes: List[str]
    n_codebooks: int = 0
    """Codebooks of a discrete model (0: continuous latent)."""
    bitrate: float = 0.0
    """Bits per second of the codes with every codebook (discrete models)."""

    def describe(self, host_buffer: Optional[int] = None) -> str:
        """What was written; with ``host_buffer`` (nn~'s buffer argument, samples), also the delay a
        player hears in nn~ (see :func:`nn_tilde_buffering`)."""
        delay_ms = 1000.0 * self.delay / self.sample_rate
        methods = ", ".join(f"{name} [{p[0]} ch /{p[1]}] -> [{p[2]} ch /{p[3]}]" for name, p in self.methods.items())
        heard = []
        if host_buffer is not None:
            used, added = nn_tilde_buffering(host_buffer, self.hop_length)
            how = "no compute thread: one buffer" if host_buffer == 0 else "one buffer filling, one computing"
            heard = [f"  in nn~ with buffer {host_buffer} (uses {used}; {how}: +{added} samples): "
                     f"{self.delay + added} samples ({1000.0 * (self.delay + added) / self.sample_rate:.1f} ms) "
                     "from input to output"]
        return "\n".join([
            f"wrote {self.path} ({self.size_bytes / 1e6:.1f} MB, {'streaming' if self.streaming else 'non-streaming'})",
            f"  sample rate {self.sample_rate} Hz, {self.channels} channel(s), hop {self.hop_length} samples",
            f"  methods: {methods}",
            f"  latent size kept: {self.latent_size} of {self.full_latent_size} (fidelity {self.fidelity:.3f})",
            f"  algorithmic delay of forward: {self.delay} samples ({delay_ms:.1f} ms at {self.sample_rate} Hz)"
            + ("" if self.streaming else " (each call is independent: not for streaming)"),
            *heard,
            *([] if not self.n_codebooks else [
                f"  discrete codes (encode_codes, decode_codes): {self.n_codebooks} codebooks, "
                f"{self.bitrate / 1000:.2f} kbps with all ({self.bitrate / self.n_codebooks / 1000:.2f} kbps each)"]),
            f"  attributes: {', '.join(self.attributes)}",
        ])


def find_checkpoint(source: Path) -> Path:
    """A checkpoint file, or ``checkpoints/last.ckpt`` of a run folder."""
    source = Path(source)
    if source.is_dir():
        candidate = source / "checkpoints" / "last.ckpt"
        if not candidate.is_file():
            raise UserError(f"{source}: no checkpoint in this run folder (expected {candidate})")
        return candidate
    if not source.is_file():
        raise UserError(f"{source}: no such run folder or checkpoint file")
    return source


def load_model(source: Path, streaming: bool) -> RAVE:
    """The model of a checkpoint (or run folder), rebuilt streaming or not, on the CPU, in eval mode."""
    path = find_checkpoint(source)
    read_checkpoint(path)  # a file that is not a training checkpoint is named for what it is not
    try:
        model = RAVE.load_from_checkpoint(path, map_location="cpu", streaming=streaming)
    except UserError:
        raise
    except Exception as error:  # a broken file can fail in many layers (zip, pickle, state dict)
        raise UserError(f"{path}: cannot load this checkpoint ({type(error).__name__}: {error})") from None
    return model.eval()


def choose_latent_size(model: RAVE, latent_size: Optional[int], fidelity: Optional[float]) -> int:
    """``latent_size`` if given, else the smallest size reaching ``fidelity``, else all dimensions."""
    full = model.hparams.latent_size
    if latent_size is not None and fidelity is not None:
        raise UserError("give --latent-size or --fidelity, not both")
    if latent_size is not None:
        if not 1 <= latent_size <= full:
            raise UserError(f"--latent-size {latent_size} is outside 1..{full} (the model's latent size)")
        return latent_size
    if fidelity is not None:
        if not 0.0 < fidelity <= 1.0:
            raise UserError(f"--fidelity {fidelity} must be in (0, 1]")
        return latent_size_for_fidelity(model.latent_fidelity, fidelity)
    return full


def reset_state(module: nn.Module) -> None:
    """Forget everything a warm-up call left in the streaming state (caches, noise position)."""
    for child in module.modules():
        if isinstance(child, cc.CachedPadding1d) and hasattr(child, "pad"):
            child.pad.zero_()
        if isinstance(child, CachedConv1d):
            child.cache.zero_()
        if hasattr(child, "tail") and hasattr(child, "position"):  # FilteredNoise
            child.tail.zero_()
            child.position.fill_(-child.cumulative_delay if child.streaming else 0)


def build(model: RAVE, latent_size: int, channels: Optional[int] = None, script: bool = True):
    """Script ``model`` (built streaming or not) as an nn~ module keeping ``latent_size`` dimensions.

    ``script=False`` returns the eager :class:`ExportedModel` (for inference in Python).

    A mono model exported with ``channels > 1`` codes each channel independently; its
    streaming state then holds ``MAX_VOICES * channels`` rows, so mc.nn~ keeps its 64 voices.
    """
    kind = DiscreteExportedModel if model.quantizer is not None else ExportedModel
    wrapper = kind(remove_weight_norm(model), latent_size, channels).eval()
    rows = MAX_VOICES * wrapper.fold
    noise = wrapper.decoder.noise
    if noise.streaming:
        noise.tail = torch.zeros(rows, noise.tail.shape[1], noise.tail.shape[2])
    with torch.no_grad(), cache_rows(rows):
        audio = torch.zeros(1, wrapper.channels, 2 * wrapper.hop_length)
        wrapper.decode(wrapper.encode(audio))  # cached_conv allocates its caches on the first call
    reset_state(wrapper)
    return torch.jit.script(wrapper) if script else wrapper


@contextmanager
def cache_rows(rows: int):
    """Let cached_conv allocate ``rows`` batch rows for its caches (its module constant, restored after)."""
    saved = cc_convs.MAX_BATCH_SIZE
    cc_convs.MAX_BATCH_SIZE = rows
    try:
        yield
    finally:
        cc_convs.MAX_BATCH_SIZE = saved


def check_writable(output: Path) -> None:
    """Refuse, before the slow work, an output that cannot be written (a read-only folder or file)."""
    if output.is_dir():
        raise UserError(f"{output}: is a folder; give the .ts file to write")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise UserError(f"{output.parent}: the folder is not writable; choose another --output")
    if output.exists() and not os.access(output, os.W_OK):
        raise UserError(f"{output}: the file is read-only; nothing was changed (remove it or choose another --output)")


def export(source: Path, output: Path, streaming: bool = False, latent_size: Optional[int] = None,
           fidelity: Optional[float] = None, channels: Optional[int] = None) -> ExportSummary:
    """Export a run folder or checkpoint to ``output`` (written atomically; nothing is overwritten on error)."""
    output = Path(output)
    if output.suffix != ".ts":
        raise UserError(f"{output}: the output must be a .ts file (nn~ loads TorchScript)")
    if not output.parent.is_dir():
        raise UserError(f"{output.parent}: no such folder for the output")
    if channels is not None and channels < 1:
        raise UserError(f"--channels {channels}: expected 1 or more (or leave it out for the model's own)")
    check_writable(output)
    model = load_model(source, streaming)
    size = choose_latent_size(model, latent_size, fidelity)
    scripted = build(model, size, channels)
    try:
        with atomic_path(output) as temporary:
            torch.jit.save(scripted, str(temporary))
    except OSError as error:
        raise UserError(f"{output}: cannot write the export ({error.strerror or error})") from None
    return ExportSummary(
        path=output, streaming=streaming, sample_rate=model.hparams.sample_rate, channels=scripted.channels,
        hop_length=model.hop_length, latent_size=size, full_latent_size=model.hparams.latent_size,
        fidelity=float(model.latent_fidelity[size - 1]), delay=model.forward_delay if streaming else 0,
        size_bytes=output.stat().st_size,
        methods={name: getattr(scripted, f"{name}_params").tolist() for name in scripted.get_methods()},
        attributes=list(scripted.get_attributes()),
        n_codebooks=model.quantizer.n_codebooks if model.quantizer is not None else 0, bitrate=model.bitrate)
