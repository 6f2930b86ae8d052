"""One way to run a trained model, from a run folder, a checkpoint or an exported ``.ts``.

Scripts that encode, decode, reconstruct, explore or evaluate take ``--model RUN_OR_TS``
and use :func:`load` to get an :class:`AutoEncoder`: ``encode(audio [B, C, T]) ->
latent [B, Z, L]`` (PCA coordinates, deterministic), ``decode(latent) -> audio`` and the
model's facts (sample rate, channels, hop, latent size, fidelity curve). Audio of any
length is padded to whole latent frames and cropped back. ``precision="bf16"`` runs a run
folder's or checkpoint's convolution stacks in bfloat16 (:func:`to_bfloat16`). A discrete model (``bottleneck:
rvq``) also has ``encode_codes``/``decode_codes`` and its codebooks' facts. :func:`noise_level` switches the
filtered-noise branch for a block of code (rave_ddsp models only).
"""
import hashlib
import math
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
from torch import Tensor

from rave_ddsp.errors import UserError

PRECISIONS = ("32", "bf16")
"""``load``'s precisions: float32 throughout, or bfloat16 convolution stacks (:func:`to_bfloat16`)."""


class AutoEncoder:
    """A trained model ready for inference (no gradients, eval mode, deterministic encoding)."""

    def __init__(self, module, sample_rate: int, channels: int, hop_length: int, latent_size: int,
                 fidelity: Optional[Tensor], source: Path, device: torch.device, precision: str = "32"):
        self.module = module
        self.precision = precision
        """``"32"`` or ``"bf16"`` (see :func:`load`)."""
        self.sample_rate = sample_rate
        self.channels = channels
        self.hop_length = hop_length
        self.latent_size = latent_size
        self.fidelity = fidelity
        """``[Z]`` explained variance of the first k PCA dimensions (checkpoints only; None for .ts)."""
        self.source = source
        self.device = device
        discrete = hasattr(module, "encode_codes")
        self.n_codebooks: int = int(module.n_codebooks) if discrete else 0
        """Codebooks of a discrete model; 0 for a continuous latent."""
        self.codebook_size: int = int(module.codebook_size) if discrete else 0
        self.fingerprint: str = codebook_fingerprint(module.quantizer) if discrete else ""
        """Identifies the codebooks: codes decode to the same audio only with the same fingerprint."""

    @property
    def bitrate(self) -> float:
        """Bits per second of the codes with every codebook (0 for a continuous model)."""
        return self.n_codebooks * math.log2(max(self.codebook_size, 1)) * self.frame_rate

    @property
    def frame_rate(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    def pad(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, C, T']`` zero-padded to a whole number of latent frames."""
        frames = max(1, math.ceil(audio.shape[-1] / self.hop_length))
        return torch.nn.functional.pad(audio, [0, frames * self.hop_length - audio.shape[-1]])

    @torch.no_grad()
    def encode(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, Z, ceil(T / hop)]`` PCA coordinates."""
        return self.module.encode(self.pad(audio).to(self.device)).cpu()

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """``[B, Z, L] -> [B, C, L * hop]``."""
        if latent.shape[1] != self.latent_size:
            raise UserError(f"{self.source}: the model decodes {self.latent_size} latent dimensions, "
                            f"got {latent.shape[1]}")
        return self.module.decode(latent.to(self.device, torch.float32)).cpu()

    @torch.no_grad()
    def encode_codes(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, N, ceil(T / hop)]`` int64 codes (discrete models)."""
        self.require_codes()
        return self.module.encode_codes(self.pad(audio).to(self.device)).round().long().cpu()

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """``[B, n, L]`` integer codes of the first ``n <= N`` codebooks -> ``[B, C, L * hop]``."""
        self.require_codes()
        n = codes.shape[1]
        if not 1 <= n <= self.n_codebooks:
            raise UserError(f"{self.source}: the model has {self.n_codebooks} codebooks, got codes of {n}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise UserError(f"{self.source}: codes must be in 0..{self.codebook_size - 1}, got "
                            f"{int(codes.min())}..{int(codes.max())}")
        full = torch.zeros(codes.shape[0], self.n_codebooks, codes.shape[-1])
        full[:, :n] = codes.float()
        previous = int(self.module.get_codebooks()[0])
        self.module.set_codebooks(n)
        try:
            return self.module.decode_codes(full.to(self.device)).cpu()
        finally:
            self.module.set_codebooks(previous)

    def require_codes(self) -> None:
        if not self.n_codebooks:
            raise UserError(f"{self.source}: a continuous model (bottleneck vae) has no codes; "
                            "codes need a discrete model (configs/discrete.yaml)")

    @torch.no_grad()
    def reconstruct(self, audio: Tensor) -> Tensor:
        """``[B, C, T] -> [B, C, T]`` (the same length as the input)."""
        return self.decode(self.encode(audio))[..., : audio.shape[-1]]


def load(source: Union[str, Path], device: Union[str, torch.device] = "cpu", precision: str = "32") -> AutoEncoder:
    """Load a run folder, a ``.ckpt`` or a (non-streaming) exported ``.ts`` for offline inference.

    ``precision``: ``"32"`` (float32) or ``"bf16"`` (:func:`to_bfloat16`; run folders and
    checkpoints only: an export is scripted in float32).
    """
    source, device = Path(source), torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if source.suffix == ".ts":
            raise UserError(f"{source}: --precision bf16 needs the run folder or checkpoint (an export runs in "
                            "float32)")
        check_bfloat16_arithmetic(device)
        from rave_ddsp.train.cli import avoid_amx_bf16_kernels

        avoid_amx_bf16_kernels()  # before build's first convolution (nothing to do on CPUs without AMX)
    if source.suffix == ".ts":
        if not source.is_file():
            raise UserError(f"{source}: no such exported model")
        try:
            module = torch.jit.load(str(source), map_location=device)
        except Exception as error:  # not a TorchScript archive, or one this torch cannot read
            raise UserError(f"{source}: cannot load this TorchScript file ({error})") from None
        if not hasattr(module, "encode_params"):
            raise UserError(f"{source}: not a rave_ddsp export (no encode/decode methods)")
        if bool(getattr(module, "streaming", False)):
            raise UserError(f"{source}: a streaming export keeps state between calls; "
                            "export without --streaming for offline use")
        in_channels, _, latent_size, hop = module.encode_params.tolist()
        # an official RAVE export (accepted for comparisons) keeps its rate in ``sr``
        sample_rate = module.get_sample_rate() if hasattr(module, "get_sample_rate") else int(module.sr)
        return AutoEncoder(module, sample_rate, in_channels, hop, latent_size, None, source, device)
    from rave_ddsp.runtime.export import build, load_model  # imports lightning: only when a checkpoint needs it

    model = load_model(source, streaming=False)
    latent_size = model.hparams.latent_size
    module = build(model, latent_size, script=False)  # the export's code path (PCA latents, table noise)
    if precision == "bf16":
        to_bfloat16(module)
    module.to(device)
    return AutoEncoder(module, model.hparams.sample_rate, model.hparams.channels, model.hop_length, latent_size,
                       model.latent_fidelity.clone(), source, device, precision)


def check_bfloat16_arithmetic(device: torch.device) -> None:
    """Refuse bfloat16 on an x86 CPU without bfloat16 arithmetic (AVX512-BF16 or AMX), where its
    convolutions run ~28x slower than float32 (imitated on AVX2; README, "Benchmarks")."""
    if device.type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(check is None for check in checks) or any(check() for check in checks):
        return  # supported, or this torch cannot tell: let it run
    raise UserError("--precision bf16: this CPU has no bfloat16 arithmetic (AVX512-BF16 or AMX); bfloat16 "
                    "convolutions would run ~28x slower than float32 here; use --precision 32")


class BFloat16(torch.nn.Module):
    """``inner`` with bfloat16 parameters, fed its input in bfloat16; its output comes back in float32."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner.to(torch.bfloat16)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.to(torch.bfloat16)).float()


def to_bfloat16(module) -> None:
    """Run the convolution stacks of an eager export (:class:`rave_ddsp.runtime.export.ExportedModel`)
    in bfloat16, in place.

    The encoder's and decoder's stacks, the waveform head and the noise branch's stack hold all
    the products; they get bfloat16 weights and activations (oneDNN accumulates in float32). The
    PQMF filter bank (its 117 dB round trip needs float32), the posterior, the latent PCA, the
    amplitude envelope and the noise filters' FFTs stay in float32. Faster where the CPU
    multiplies bfloat16 natively (AVX512-BF16, AMX; README, "Benchmarks"), slower where it does not.
    """
    for owner, name in ((module.encoder, "net"), (module.decoder, "net"), (module.decoder, "head"),
                        (module.decoder.noise, "net")):
        setattr(owner, name, BFloat16(getattr(owner, name)))


def codebook_fingerprint(quantizer) -> str:
    """16 hex digits of SHA-256 over a quantizer's parameters (eager or TorchScript): what its codes mean."""
    digest = hashlib.sha256()
    for name, value in sorted(quantizer.state_dict().items()):
        if name != "idle_steps":
            digest.update(name.encode())
            digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def has_noise_level(model) -> bool:
    """Whether ``model.module`` has the export's ``noise_level`` attribute (an official RAVE export has not)."""
    return hasattr(model.module, "set_noise_level")


@contextmanager
def noise_level(model, level: float) -> Iterator[None]:
    """Decode with the filtered-noise branch's gain at ``level`` (0: off, 1: as trained) inside the block.

    The previous gain is restored on leaving, also on an error. The noise table is
    deterministic and the PQMF synthesis linear, so ``decode(z)`` minus ``decode(z)`` at
    level 0 is the noise branch's part of the output (up to float rounding).
    """
    if not has_noise_level(model):
        raise UserError(f"{model.source}: this model has no noise_level (not a rave_ddsp export)")
    previous = float(model.module.get_noise_level()[0])
    if model.module.set_noise_level(level) != 0:
        raise UserError(f"noise level {level}: expected a finite value >= 0")
    try:
        yield
    finally:
        model.module.set_noise_level(previous)
