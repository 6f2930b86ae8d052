"""Latent-space maths of exploration: covariance, interpolation, the prior in PCA coordinates, walks."""
import math

import numpy as np
import pytest
import torch

from rave_ddsp.train.latent import (LatentStatistics, gaussian_kernel, interpolate, ornstein_uhlenbeck, prior_mean,
                              sample_prior, smoothed_noise)


def random_rotation(size: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # [Z, Z], orthonormal rows


def test_covariance_matches_numpy():
    frames = torch.randn(500, 4) @ torch.randn(4, 4) + 3.0  # [N, Z]
    statistics = LatentStatistics(4)
    for chunk in frames.split(128):
        statistics.update(chunk.T[None])  # [1, Z, L]
    expected = np.cov(frames.double().numpy().T, bias=True)
    np.testing.assert_allclose(statistics.covariance().numpy(), expected, atol=1e-9)


def numpy_slerp(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    angle = np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))
    return (np.sin((1 - w) * angle) * a + np.sin(w * angle) * b) / np.sin(angle)


@pytest.mark.parametrize("spherical", [False, True], ids=["linear", "spherical"])
def test_interpolation_ends_at_its_endpoints(spherical):
    start, end = torch.randn(5, 7), torch.randn(5, 7)  # [Z, L]
    path = interpolate(start, end, torch.tensor([0.0, 1.0]), spherical)
    torch.testing.assert_close(path[0], start, atol=1e-6, rtol=0)
    torch.testing.assert_close(path[1], end, atol=1e-6, rtol=0)


def test_interpolation_matches_numpy_references():
    start, end = torch.randn(5, 7), torch.randn(5, 7)  # [Z, L]
    weights = torch.tensor([0.25, 0.6])
    linear = interpolate(start, end, weights)
    spherical = interpolate(start, end, weights, spherical=True)
    a, b = start.double().numpy(), end.double().numpy()
    for i, w in enumerate(weights.tolist()):
        np.testing.assert_allclose(linear[i].numpy(), (1 - w) * a + w * b, atol=1e-6)
        for frame in range(7):
            np.testing.assert_allclose(spherical[i, :, frame].numpy(), numpy_slerp(a[:, frame], b[:, frame], w),
                                       atol=1e-5)


def test_slerp_keeps_the_norm_of_equal_norm_frames_and_lerp_does_not():
    start, end = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])  # [Z=2, L=1], orthogonal unit frames
    middle = torch.tensor([0.5])
    assert float(interpolate(start, end, middle, spherical=True)[0].norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(interpolate(start, end, middle)[0].norm()) == pytest.approx(math.sqrt(0.5), abs=1e-6)


def test_slerp_of_parallel_frames_falls_back_to_lerp():
    start = torch.tensor([[1.0, 1.0, 0.0], [2.0, -1.0, 0.0]])  # frames: parallel, antiparallel, zero
    end = torch.tensor([[2.0, -1.0, 1.0], [4.0, 1.0, 1.0]])
    weights = torch.tensor([0.3])
    torch.testing.assert_close(interpolate(start, end, weights, spherical=True), interpolate(start, end, weights))


@pytest.mark.parametrize("kept", [6, 3], ids=["all-dims", "truncated"])
def test_prior_in_pca_coordinates_is_unit_gaussian_about_minus_r_mu(kept):
    """Raw-latent prior samples, rotated as the model rotates them, have mean -R mu and covariance I."""
    z, frames = 6, 200_000
    mu = torch.tensor([1.5, -2.0, 0.7, 0.0, 3.0, -1.0])
    rotation = random_rotation(z, seed=1)[:kept]  # [Z', Z]
    raw = torch.randn(z, frames, generator=torch.Generator().manual_seed(2))  # z ~ N(0, I), [Z, L]
    coordinates = rotation @ (raw - mu[:, None])  # [Z', L], as ExportedModel.encode computes them
    expected = prior_mean(mu, rotation)
    torch.testing.assert_close(coordinates.mean(1), expected, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(coordinates), torch.eye(kept), atol=0.02, rtol=0)
    assert float(expected.norm()) > 1.0  # so N(0, I) in PCA coordinates would be visibly wrong


def test_prior_samples_decode_to_the_raw_prior():
    """Samples drawn by sample_prior, rotated back as decode does (R^T x + mu), are N(0, I) in the raw latent."""
    z = 5
    mu = torch.tensor([2.0, -1.0, 0.5, 1.0, -3.0])
    rotation = random_rotation(z, seed=3)
    samples = sample_prior(prior_mean(mu, rotation), 100_000, width=4.0, generator=torch.Generator().manual_seed(0))
    raw = rotation.T @ samples + mu[:, None]  # [Z, L]
    torch.testing.assert_close(raw.mean(1), torch.zeros(z), atol=0.05, rtol=0)  # smoothing: fewer independent frames
    torch.testing.assert_close(torch.cov(raw), torch.eye(z), atol=0.05, rtol=0)
    naive = rotation.T @ torch.randn(z, 100_000) + mu[:, None]  # N(0, I) in PCA coordinates: centred on mu
    assert float((naive.mean(1) - mu).abs().max()) < 0.05


def test_sample_prior_draws_only_the_first_dims_and_scales_with_temperature():
    mean = torch.tensor([1.0, 2.0, 3.0])
    samples = sample_prior(mean, 20_000, width=0.0, temperature=0.5, dims=2,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples[2], torch.full((20_000,), 3.0))
    torch.testing.assert_close(samples[:2].std(1), torch.full((2,), 0.5), atol=0.01, rtol=0)


@pytest.mark.parametrize("width", [0.0, 1.5, 6.0])
def test_smoothed_noise_has_unit_variance_and_gaussian_autocorrelation(width):
    assert float(gaussian_kernel(width).norm()) == pytest.approx(1.0)
    noise = smoothed_noise(8, 20_000, width, torch.Generator().manual_seed(0)).double()  # [8, L]
    assert float(noise.var()) == pytest.approx(1.0, abs=0.03)
    for lag in (1, 3):
        correlation = float((noise[:, lag:] * noise[:, :-lag]).mean() / noise.var())
        # white noise through a Gaussian of std w: autocorrelation exp(-lag^2 / (4 w^2))
        expected = math.exp(-lag ** 2 / (4 * width ** 2)) if width else 0.0
        assert correlation == pytest.approx(expected, abs=0.03)


def test_ornstein_uhlenbeck_starts_at_start_and_settles_to_its_stationary_spread():
    start = torch.cat([torch.full((100,), 3.0), torch.full((100,), -1.0), torch.tensor([0.5])])  # [Z]
    step = torch.cat([torch.full((100,), 0.2), torch.full((100,), 0.1), torch.tensor([0.0])])  # [Z]
    decay = 0.9
    path = ornstein_uhlenbeck(start, 2000, step, decay, centre=torch.zeros(201),
                              generator=torch.Generator().manual_seed(0))  # [Z, L]
    assert torch.equal(path[:, 0], start)
    settled = path[:200, 200:]  # 0.9 ** 200: the start is forgotten
    expected_std = step[:200] / math.sqrt(1 - decay ** 2)
    for group in (slice(0, 100), slice(100, 200)):
        assert float(settled[group].std()) == pytest.approx(float(expected_std[group][0]), rel=0.03)
        assert float(settled[group].mean()) == pytest.approx(0.0, abs=0.02)
    assert float(path[200, -1]) == pytest.approx(0.5 * decay ** 1999, abs=1e-6)  # no step: it decays to the centre


def test_free_walk_spreads_like_brownian_motion():
    walks = ornstein_uhlenbeck(torch.zeros(2000), 101, torch.tensor(0.1), 1.0,
                               generator=torch.Generator().manual_seed(0))  # 2000 independent walks, [Z, L]
    assert float(walks[:, 100].std()) == pytest.approx(0.1 * math.sqrt(100), rel=0.05)


def test_random_processes_are_reproducible_with_a_seed_and_differ_without():
    def walk(seed):
        generator = torch.Generator().manual_seed(seed)
        return ornstein_uhlenbeck(torch.zeros(4), 50, torch.tensor(0.3), 0.95, generator=generator)

    def draw(seed):
        return sample_prior(torch.zeros(4), 50, 2.0, generator=torch.Generator().manual_seed(seed))

    for process in (walk, draw):
        assert torch.equal(process(7), process(7))
        assert not torch.allclose(process(7), process(8))


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="decay"):
        ornstein_uhlenbeck(torch.zeros(2), 10, torch.tensor(0.1), 1.5)
    with pytest.raises(ValueError, match="width"):
        gaussian_kernel(-1.0)
    with pytest.raises(ValueError, match="one shape"):
        interpolate(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0.5]))
