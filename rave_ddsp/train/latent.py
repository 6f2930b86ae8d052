"""Latent-space statistics: mean, PCA rotation and the explained-variance ("fidelity") curve.

The encoder's posterior means, gathered over many frames, have a mean ``mu [Z]`` and a
covariance ``S [Z, Z]``. Its eigenvectors (largest variance first) form the PCA
rotation, and ``fidelity[k-1]`` is the fraction of the total variance that the first
``k`` principal dimensions explain. An exported model can keep only the first ``k``
dimensions: :func:`latent_size_for_fidelity` gives the smallest ``k`` that reaches a
requested fidelity.

It also holds the latent-space maths of exploration (``scripts/explore.py``), as pure
functions of tensors: interpolation between trajectories, the prior in PCA coordinates,
smoothed prior samples and Ornstein-Uhlenbeck random walks. Trajectories are ``[Z, L]``.
"""
import math
from typing import Optional, Tuple

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

    def covariance(self) -> Tensor:
        """``[Z, Z]`` float64 covariance of the frames seen (biased: divided by the frame count)."""
        mean = self.total / self.count.clamp_min(1)
        covariance = self.outer / self.count.clamp_min(1) - torch.outer(mean, mean)
        return 0.5 * (covariance + covariance.T)

    def compute(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Mean, PCA components (rows, by decreasing variance) and fidelity; float32.

        Needs at least two frames; with fewer (or a degenerate, all-constant latent) the
        rotation is the identity and the fidelity is linear in the number of dimensions.
        """
        z = self.latent_size
        if float(self.count) < 2:
            return (torch.zeros(z), torch.eye(z), torch.arange(1, z + 1, dtype=torch.float32) / z)
        mean = self.total / self.count
        covariance = self.covariance()
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


# ------------------------------------------------------------------ exploration --
SMOOTHING_RADIUS = 3.0
"""The Gaussian smoothing kernel is cut at this many standard deviations either side."""
PARALLEL_EPSILON = 1e-6
"""Below this ``sin(angle)`` two frames count as (anti)parallel and slerp falls back to lerp."""


def interpolate(start: Tensor, end: Tensor, weights: Tensor, spherical: bool = False) -> Tensor:
    """Frame-by-frame interpolation of two trajectories: ``[Z, L]`` each, ``weights [N]`` -> ``[N, Z, L]``.

    Weight 0 gives ``start``, 1 gives ``end``. Linear: ``(1 - w) a + w b``. Spherical
    (Shoemake's slerp, about the origin of the PCA coordinates, i.e. the training latent
    mean): ``(sin((1 - w) t) a + sin(w t) b) / sin t`` with ``t`` the angle between the two
    frames ``a`` and ``b``; it keeps the norm of equal-norm frames, where the straight line
    dips towards the mean. (Anti)parallel frames and zero frames, where the arc is not
    unique or the angle undefined, are interpolated linearly.
    """
    if start.shape != end.shape:
        raise ValueError(f"start {tuple(start.shape)} and end {tuple(end.shape)}: expected two [Z, L] of one shape")
    w = weights.to(start.dtype)[:, None, None]  # [N, 1, 1]
    linear = (1 - w) * start + w * end  # [N, Z, L]
    if not spherical:
        return linear
    a, b = start.double(), end.double()
    norms = a.norm(dim=0) * b.norm(dim=0)  # [L]
    angle = ((a * b).sum(0) / norms.clamp_min(1e-30)).clamp(-1, 1).acos()  # [L]
    sine = angle.sin()  # [L]
    safe = (sine.abs() > PARALLEL_EPSILON) & (norms > 0)
    divisor = torch.where(safe, sine, torch.ones_like(sine))
    wd = w.double()
    arc = (torch.sin((1 - wd) * angle) * a + torch.sin(wd * angle) * b) / divisor  # [N, Z, L]
    return torch.where(safe, arc.to(start.dtype), linear)


def prior_mean(latent_mean: Tensor, components: Tensor) -> Tensor:
    """Mean of the prior N(0, I) in PCA coordinates: ``-components @ latent_mean``, ``[Z']`` for ``components [Z', Z]``.

    Training pulls each posterior towards N(0, I) on the *raw* latent ``z``. The model's
    coordinates are ``x = R (z - mu)`` (``R`` = ``components``, orthonormal rows; ``mu`` the
    mean of the posterior means), so ``z ~ N(0, I)`` gives ``x ~ N(-R mu, R R^T) = N(-R mu, I)``:
    the prior is a unit Gaussian again, shifted by ``-R mu``; N(0, I) in PCA coordinates
    would be centred on the data mean instead. With ``Z' < Z`` rows kept, ``x`` holds the
    first ``Z'`` coordinates of the same Gaussian (still unit covariance).
    """
    return -(components.double() @ latent_mean.double()).to(latent_mean.dtype)


def gaussian_kernel(width: float) -> Tensor:
    """``[2R + 1]`` Gaussian of standard deviation ``width`` frames (R = ceil(3 width)), unit *L2* norm.

    Convolving white unit-variance noise with it gives unit variance again (the variance of
    a filtered white sequence is the sum of the squared taps). ``width`` 0 gives ``[1.]``.
    """
    if width < 0:
        raise ValueError(f"smoothing width {width}: expected >= 0")
    if width == 0:
        return torch.ones(1, dtype=torch.float64)
    radius = math.ceil(SMOOTHING_RADIUS * width)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / width) ** 2)
    return taps / taps.norm()


def smoothed_noise(size: int, frames: int, width: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """``[size, frames]`` Gaussian noise, smoothed in time by :func:`gaussian_kernel`, unit marginal variance.

    Drawn with ``2R`` extra frames and convolved without padding, so every frame (edges too)
    has variance exactly 1.
    """
    kernel = gaussian_kernel(width)
    noise = torch.randn(size, 1, frames + kernel.numel() - 1, generator=generator, dtype=torch.float64)
    return torch.nn.functional.conv1d(noise, kernel.flip(0)[None, None])[:, 0].float()  # [size, frames]


def sample_prior(mean: Tensor, frames: int, width: float, temperature: float = 1.0, dims: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """``[Z, frames]`` draw from the prior N(mean, temperature^2 I) per frame, smoothed over ``width`` frames.

    ``mean [Z]`` is the prior mean in PCA coordinates (:func:`prior_mean`). Only the first
    ``dims`` coordinates are drawn (default: all); the others stay at their prior mean.
    """
    z = mean.numel()
    dims = z if dims is None else dims
    noise = torch.zeros(z, frames)
    noise[:dims] = smoothed_noise(dims, frames, width, generator)
    return mean.float()[:, None] + temperature * noise


def ornstein_uhlenbeck(start: Tensor, frames: int, step: Tensor, decay: float, centre: Optional[Tensor] = None,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """``[Z, frames]`` random walk from ``start [Z]``: ``x[t] = c + decay (x[t-1] - c) + step * n[t]``.

    ``n[t]`` is unit Gaussian noise, ``step [Z]`` (or a float) the size of one frame's step
    (0 freezes a coordinate), ``c`` the ``centre`` it is pulled back to (default: ``start``)
    and ``decay`` in ``(0, 1]`` the pull: ``exp(-1 / (tau * frame rate))`` for a time
    constant ``tau``, 1 for a free (Brownian) walk. It settles to N(c, step^2 / (1 - decay^2)).
    Frame 0 is ``start``.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay {decay}: expected in (0, 1]")
    centre = start if centre is None else centre
    start, centre = start.double(), centre.double()
    step = torch.as_tensor(step, dtype=torch.float64).expand_as(start)
    noise = torch.randn(frames, start.numel(), generator=generator, dtype=torch.float64)  # [L, Z]
    path = torch.empty(frames, start.numel(), dtype=torch.float64)  # [L, Z]
    x = start
    for t in range(frames):
        if t:
            x = centre + decay * (x - centre) + step * noise[t]
        path[t] = x
    return path.T.float()  # [Z, L]
