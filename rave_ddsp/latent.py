"""Latent-space statistics: mean, PCA rotation and the explained-variance ("fidelity") curve.

The encoder's posterior means, gathered over many frames, have a mean ``mu [Z]`` and a
covariance ``S [Z, Z]``. Its eigenvectors (largest variance first) form the PCA
rotation, and ``fidelity[k-1]`` is the fraction of the total variance that the first
``k`` principal dimensions explain. An exported model can keep only the first ``k``
dimensions: :func:`latent_size_for_fidelity` gives the smallest ``k`` that reaches a
requested fidelity.
"""
from typing import Tuple

import torch
from torch import Tensor


class LatentStatistics:
    """Running sums of latent frames, mergeable across batches and processes.

    ``update(mean [B, Z, L])`` adds ``B * L`` frames; ``compute()`` returns
    ``(mean [Z], components [Z, Z], fidelity [Z])``, with the principal directions as the
    *rows* of ``components`` (so ``pca = components @ (z - mean)``). Sums are float64.
    """

    def __init__(self, latent_size: int):
        self.latent_size = latent_size
        self.reset()

    def reset(self) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.total = torch.zeros(self.latent_size, dtype=torch.float64)
        self.outer = torch.zeros(self.latent_size, self.latent_size, dtype=torch.float64)

    def update(self, mean: Tensor) -> None:
        frames = mean.detach().transpose(1, 2).reshape(-1, mean.shape[1]).to(torch.float64).cpu()  # [B * L, Z]
        self.count += frames.shape[0]
        self.total += frames.sum(0)
        self.outer += frames.T @ frames

    def state(self) -> Tensor:
        """All sums in one flat float64 tensor (for an all-reduce across processes)."""
        return torch.cat([self.count.reshape(1), self.total, self.outer.flatten()])

    def load_state(self, flat: Tensor) -> None:
        z = self.latent_size
        flat = flat.to(torch.float64).cpu()
        self.count = flat[0].clone()
        self.total = flat[1:1 + z].clone()
        self.outer = flat[1 + z:].reshape(z, z).clone()

    def compute(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean, PCA components (rows, by decreasing variance) and fidelity; float32.

        Needs at least two frames; with fewer (or a degenerate, all-constant latent) the
        rotation is the identity and the fidelity is linear in the number of dimensions.
        """
        z = self.latent_size
        if float(self.count) < 2:
            return (torch.zeros(z), torch.eye(z), torch.arange(1, z + 1, dtype=torch.float32) / z)
        mean = self.total / self.count
        covariance = self.outer / self.count - torch.outer(mean, mean)
        covariance = 0.5 * (covariance + covariance.T)
        variances, vectors = torch.linalg.eigh(covariance)  # ascending
        variances, vectors = variances.flip(0).clamp_min(0), vectors.flip(1)
        total = float(variances.sum())
        if total <= 0:
            return (mean.float(), torch.eye(z), torch.arange(1, z + 1, dtype=torch.float32) / z)
        # sign convention: the largest component of each direction is positive (reproducible)
        signs = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
        vectors = vectors * signs
        fidelity = torch.cumsum(variances, 0) / total
        return mean.float(), vectors.T.contiguous().float(), fidelity.float()


def latent_size_for_fidelity(fidelity: Tensor, target: float) -> int:
    """Smallest ``k`` with ``fidelity[k - 1] >= target`` (``fidelity`` as from :meth:`LatentStatistics.compute`).

    ``target`` must be in ``(0, 1]``; ``1.0`` keeps every dimension.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"fidelity must be in (0, 1], got {target}")
    if target >= 1.0:
        return int(fidelity.numel())
    reached = (fidelity >= target).nonzero()
    return int(reached[0, 0]) + 1 if reached.numel() else int(fidelity.numel())
