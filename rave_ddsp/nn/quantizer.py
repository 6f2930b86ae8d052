"""Residual vector quantization of the latent sequence: the discrete bottleneck (``bottleneck: rvq``).

Codebook ``i`` quantizes what the codebooks before it left over::

    r_0 = z
    e_i = P_i r_i                      (a 1x1 projection down to ``codebook_dim`` dimensions)
    k_i = argmax_k <e_i / |e_i|, c_ik / |c_ik|>          (nearest entry by cosine similarity)
    q_i = O_i c_{i, k_i}               (the entry, projected back up to ``Z``)
    r_{i+1} = r_i - q_i,               z_q = q_0 + ... + q_{n-1}

The lookup in a low-dimensional, L2-normalised space is DAC's (Kumar et al. 2023, "High-fidelity
audio compression with improved RVQGAN"): it measured far better codebook usage than a lookup in
the full latent. Training uses the straight-through estimator (the decoder's gradient reaches
``e_i`` as if the lookup were the identity) with the VQ-VAE losses (van den Oord et al. 2017):
the commitment term ``|e_i - sg(c)|^2`` pulls the encoder to its codes, the codebook term
``|sg(e_i) - c|^2`` moves the codes to the encoder. An entry unused for ``dead_code_steps`` training
steps is restarted at a random input of the current batch (as in SoundStream/EnCodec; in data-parallel
training, usage is counted over all processes and the first one's inputs are taken), and
quantizer dropout (SoundStream) trains a random number of codebooks per example with probability
``dropout``, so that the first ``k`` codebooks alone decode well: one model, several bitrates.

At inference the output is exactly ``sum_i O_i c_{i, k_i}``: decoding the codes gives the same
latent as quantizing the input, bit for bit.
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn


class Codebook(nn.Module):
    """One stage of the chain: projections in and out and ``size`` entries of ``dim`` dimensions."""

    def __init__(self, latent_size: int, size: int, dim: int):
        super().__init__()
        self.project_in = nn.Conv1d(latent_size, dim, 1)
        self.project_out = nn.Conv1d(dim, latent_size, 1)
        self.entries = nn.Parameter(torch.randn(size, dim))

    def lookup(self, residual: Tensor) -> Tuple[Tensor, Tensor]:
        """``residual [B, Z, L] -> (e [B, d, L], codes [B, L])``: the nearest entry by cosine similarity."""
        e = self.project_in(residual)  # [B, d, L]
        directions = nn.functional.normalize(e, dim=1)
        entries = nn.functional.normalize(self.entries, dim=1)  # [K, d]
        return e, torch.einsum("kd,bdl->bkl", entries, directions).argmax(1)

    def entry(self, codes: Tensor) -> Tensor:
        """``codes [B, L] -> [B, d, L]``."""
        return self.entries[codes].transpose(1, 2)


class ResidualVectorQuantizer(nn.Module):
    """``z [B, Z, L] -> (z_q [B, Z, L], codes [B, N, L] int64, commitment [], codebook [])``.

    Args:
        latent_size: ``Z``.
        n_codebooks: ``N``, codebooks in the residual chain.
        codebook_size: entries per codebook (``log2`` of it: bits per code).
        codebook_dim: dimensions of the lookup space.
        dropout: probability that a training example uses a random number ``1..N`` of codebooks.
        dead_code_steps: training steps without use after which an entry is restarted (0: never).
    """

    def __init__(self, latent_size: int, n_codebooks: int = 8, codebook_size: int = 1024, codebook_dim: int = 8,
                 dropout: float = 0.5, dead_code_steps: int = 200):
        super().__init__()
        if n_codebooks < 1 or codebook_size < 2 or codebook_dim < 1:
            raise ValueError(f"need n_codebooks >= 1, codebook_size >= 2 and codebook_dim >= 1, got "
                             f"{n_codebooks}, {codebook_size}, {codebook_dim}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"quantizer dropout must be in [0, 1], got {dropout}")
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.dropout = dropout
        self.dead_code_steps = dead_code_steps
        self.books = nn.ModuleList(Codebook(latent_size, codebook_size, codebook_dim) for _ in range(n_codebooks))
        # training steps since each entry was last chosen (dead-code restarts)
        self.register_buffer("idle_steps", torch.zeros(n_codebooks, codebook_size, dtype=torch.long))

    @property
    @torch.jit.unused
    def bits_per_frame(self) -> float:
        return self.n_codebooks * math.log2(self.codebook_size)

    def forward(self, z: Tensor, n_codebooks: int = -1) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Quantize with the first ``n_codebooks`` (-1: all; in training, quantizer dropout may use fewer
        per example). The losses are means over the codebooks and frames each example used."""
        n = self.n_codebooks if n_codebooks < 0 else n_codebooks
        batch = z.shape[0]
        used = torch.full((batch,), n, device=z.device, dtype=torch.long)
        if self.training and self.dropout > 0:
            drop = torch.rand(batch, device=z.device) < self.dropout
            used = torch.where(drop, torch.randint(1, n + 1, (batch,), device=z.device), used)
        residual, quantized = z, torch.zeros_like(z)
        codes: List[Tensor] = []
        commitment = z.new_zeros(())
        codebook = z.new_zeros(())
        weight = used.sum().clamp_min(1).to(z.dtype)
        for i, book in enumerate(self.books):
            if i < n:
                e, k = book.lookup(residual)
                c = book.entry(k)  # [B, d, L]
                active = used > i  # [B]
                mask = active.to(z.dtype)
                if self.training:
                    commitment = commitment + ((e - c.detach()).pow(2).mean((1, 2)) * mask).sum() / weight
                    codebook = codebook + ((e.detach() - c).pow(2).mean((1, 2)) * mask).sum() / weight
                    c = e + (c - e).detach()  # straight through
                    self.track_usage(i, e.detach(), k, active)
                q = book.project_out(c) * mask[:, None, None]
                quantized = quantized + q
                residual = residual - q
                codes.append(k)
        return quantized, torch.stack(codes, 1), commitment, codebook

    @torch.jit.export
    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, n, L]`` (integers, ``n <= N``) -> ``z_q [B, Z, L]`` from the first ``n`` codebooks."""
        quantized = torch.zeros(0)
        for i, book in enumerate(self.books):
            if i < codes.shape[1]:
                q = book.project_out(book.entry(codes[:, i]))
                quantized = q if i == 0 else quantized + q
        return quantized

    @torch.jit.unused
    @torch.no_grad()
    def track_usage(self, index: int, e: Tensor, codes: Tensor, active: Tensor) -> None:
        """Count idle steps of codebook ``index``'s entries; restart those idle too long at random
        inputs of this batch (``e [B, d, L]``, ``codes [B, L]``, only ``active [B]`` examples count)."""
        if self.dead_code_steps <= 0:
            return
        # codes chosen in every process (data-parallel training): all replicas count and restart alike
        chosen_count = torch.bincount(codes[active].flatten(), minlength=self.codebook_size)
        frames = active.sum().reshape(1) * codes.shape[-1]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.all_reduce(chosen_count)
            torch.distributed.all_reduce(frames)
        if int(frames) == 0:
            return
        idle = self.idle_steps[index]
        idle += 1
        idle[chosen_count > 0] = 0
        dead = (idle >= self.dead_code_steps).nonzero().flatten()
        if dead.numel() == 0:
            return
        inputs = e[active].transpose(1, 2).reshape(-1, e.shape[1])  # [frames, d]
        replacement = torch.zeros(dead.numel(), e.shape[1], device=e.device, dtype=e.dtype)
        if inputs.shape[0]:
            replacement = inputs[torch.randint(0, inputs.shape[0], (dead.numel(),), device=e.device)]
        if distributed:  # the first process's inputs, everywhere
            torch.distributed.broadcast(replacement, src=0)
        self.books[index].entries.data[dead] = replacement
        idle[dead] = 0


def usage_statistics(counts: Tensor) -> Tuple[Tensor, Tensor]:
    """``counts [N, K]`` of codes chosen -> ``(perplexity [N], used fraction [N])``.

    Perplexity is ``exp`` of the entropy (nats) of each codebook's empirical code distribution:
    ``K`` when every entry is chosen equally often, 1 when one entry takes all.
    """
    total = counts.sum(1, keepdim=True).clamp_min(1)
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1)
    return entropy.exp(), (counts > 0).double().mean(1)
