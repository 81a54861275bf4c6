"""Likelihood objects against closed forms: Gaussian (scalar, per measurement, per element),
Poisson (the DPS approximation and the exact Poisson NLL), Poisson-Gaussian and the circular
complex Gaussian; built from deepinv noise models by type; the posterior mean of a complex
linear-Gaussian problem (SMC ensemble) against its closed form; conditional priors."""
from __future__ import annotations

import math

import deepinv as dinv
import numpy as np
import pytest
import torch
from scipy import stats

from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import Matrix
from invdiff.operators.noise import ComplexGaussianNoise
from invdiff.samplers import SMCEnsemble, make_problem
from invdiff.samplers.likelihood import (
    ComplexGaussianLikelihood,
    GaussianLikelihood,
    PoissonGaussianLikelihood,
    PoissonLikelihood,
    likelihood_from,
)

pytestmark = pytest.mark.usefixtures("one_thread")
D64 = torch.float64


def _matrix_problem(likelihood, m=3, n=4, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=D64)
    physics = Matrix(A)
    x = torch.randn(batch, n, generator=g, dtype=D64)
    y = x @ A.T + 0.3 * torch.randn(batch, m, generator=g, dtype=D64).abs() + 1.0
    return A, physics, x, y, make_problem(y, physics, likelihood=likelihood)


@pytest.mark.parametrize("sigma", [0.3, torch.tensor([0.2, 0.5]), torch.tensor([0.1, 0.2, 0.4])])
def test_gaussian_nll_and_gradient_closed_form(sigma):
    """nll = sum_j (y - A x)_j^2 / (2 s_j^2), grad = -A^T ((y - A x) / s^2), for a float, one
    sigma per measurement and one per element."""
    A, physics, x, y, p = _matrix_problem(GaussianLikelihood(sigma))
    s = torch.as_tensor(sigma, dtype=D64)
    s2 = (s[:, None] if s.numel() == 2 else s) ** 2  # (B, 1) per measurement, (m,) per element
    r = y - x @ A.T
    torch.testing.assert_close(p.nll(x), (r**2 / (2 * s2)).sum(1))
    g, nll = p.nll_grad(x)
    torch.testing.assert_close(g, -(r / s2) @ A)
    torch.testing.assert_close(nll, p.nll(x))


def test_poisson_approximation_and_exact_nll():
    """The DPS approximation: variance g max(y, g); the exact Poisson NLL against scipy."""
    gain = 0.5
    A, physics, x, y, p = _matrix_problem(PoissonLikelihood(gain))
    v = gain * torch.clamp(y, min=gain)
    r = y - x @ A.T
    torch.testing.assert_close(p.nll(x), (r**2 / (2 * v)).sum(1))
    torch.testing.assert_close(p.nll_grad(x)[0], -(r / v) @ A)
    counts = torch.tensor([[0.0, 3.0, 7.0]], dtype=D64)
    rate = torch.tensor([[0.5, 2.0, 9.0]], dtype=D64)
    lik = PoissonLikelihood(gain).bind(counts, 1, 1)
    ref = -stats.poisson.logpmf(counts.numpy()[0], rate.numpy()[0]).sum()
    assert float(lik.exact_nll(gain * counts, gain * rate)) == pytest.approx(ref, rel=1e-12)


def test_poisson_gaussian_variance():
    lik = PoissonGaussianLikelihood(0.5, 0.1).bind(torch.zeros(1, 3), 1, 1)
    y = torch.tensor([[-1.0, 0.0, 2.0]])
    torch.testing.assert_close(lik.variance(y), torch.tensor([[0.01, 0.01, 1.01]]))


def test_likelihood_from_noise_models_by_type():
    make = lambda nm: likelihood_from(dinv.physics.Denoising(noise_model=nm))  # noqa: E731
    assert isinstance(make(dinv.physics.GaussianNoise(0.1)), GaussianLikelihood)
    assert isinstance(make(dinv.physics.PoissonNoise(gain=0.2)), PoissonLikelihood)
    pg = make(dinv.physics.PoissonGaussianNoise(gain=0.2, sigma=0.1))  # rejected before the refactor
    assert isinstance(pg, PoissonGaussianLikelihood)
    assert isinstance(make(ComplexGaussianNoise(0.1)), ComplexGaussianLikelihood)
    assert make(dinv.physics.ZeroNoise()) is None
    with pytest.raises(ValueError, match="no likelihood for the noise model"):
        make(dinv.physics.UniformNoise(0.1))


def test_complex_gaussian_convention():
    """CN(0, s^2): E|n|^2 = s^2, each real channel s^2 / 2 (noise, z-bound), and the NLL is
    |y - z|^2 / s^2 summed over the complex entries."""
    s, n = 0.8, 200_000
    noise = ComplexGaussianNoise(s, rng=torch.Generator().manual_seed(0))(torch.zeros(1, 2, n, dtype=D64))
    var_re, var_im = noise[0, 0].var().item(), noise[0, 1].var().item()
    se = (s**2 / 2) * math.sqrt(2 / n)  # standard error of a sample variance
    assert abs(var_re - s**2 / 2) < 5 * se and abs(var_im - s**2 / 2) < 5 * se
    y, z = torch.randn(2, 2, 5, dtype=D64), torch.randn(2, 2, 5, dtype=D64)
    lik = ComplexGaussianLikelihood(s).bind(y, 2, 1)
    yc, zc = torch.complex(y[:, 0], y[:, 1]), torch.complex(z[:, 0], z[:, 1])
    torch.testing.assert_close(lik.nll(y, z), ((yc - zc).abs() ** 2).sum(1) / s**2)


def _real_form(H: torch.Tensor) -> torch.Tensor:
    """The real matrix of x -> H x on [Re x; Im x]."""
    return torch.cat([torch.cat([H.real, -H.imag], 1), torch.cat([H.imag, H.real], 1)], 0)


def test_complex_linear_gaussian_posterior_mean_by_smc():
    """x ~ CN(0, s^2 I) in C^4, y = H x + CN(0, sigma^2 I) in C^3: the SMC ensemble's posterior
    mean against the closed form, within 5 standard errors (posterior std / sqrt(min ESS))."""
    g = torch.Generator().manual_seed(1)
    n, m, s, sigma = 4, 3, 1.0, 0.3
    H = torch.complex(torch.randn(m, n, generator=g, dtype=D64), torch.randn(m, n, generator=g, dtype=D64)) / math.sqrt(2 * n)
    A = _real_form(H)
    physics = Matrix(A, noise_model=ComplexGaussianNoise(sigma, rng=torch.Generator().manual_seed(2)))
    prior = Gaussian(torch.zeros(2 * n, dtype=D64), s**2 / 2)
    x = prior.sample(1, generator=g)
    y = physics(x)
    exact = prior.posterior(A, y[0], sigma / math.sqrt(2))
    out = SMCEnsemble(prior, steps=60, sigma_max=20.0, progress=False).sample(
        y, physics, n_samples=4000, generator=torch.Generator().manual_seed(3))
    post_std = exact.covariance.diagonal().sqrt()
    se = post_std / math.sqrt(float(out.min_ess()[0]))
    assert bool(((out.mean()[0] - exact.mean).abs() < 5 * se).all())
    # and the spread: the sampler's std within 10% of the exact one
    np.testing.assert_allclose(out.std()[0].numpy(), post_std.numpy(), rtol=0.1)


class ConditionalGaussian(torch.nn.Module):
    """N(c, s^2 I) with the mean given as a condition: D(x, sigma, mean=c) = c + s^2 (x - c) / (s^2 + sigma^2)."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x, sigma, mean):
        sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return mean + self.s**2 / (self.s**2 + sig**2) * (x - mean)


def test_conditional_prior_unconditional_sampling():
    """solvers.sample(..., cond=): the ODE maps N(0, sigma_max^2) to N(c, s^2) (mean and std,
    5 standard errors)."""
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.diffusion.solvers import sample

    n, s = 4000, 0.5
    c = torch.tensor([[1.0, -2.0, 3.0]], dtype=D64).expand(n, 3)
    x = 80.0 * torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    out = sample(ConditionalGaussian(s), x, karras_sigmas(40, 0.002, 80.0), method="heun", cond={"mean": c}).x
    assert bool(((out.mean(0) - c[0]).abs() < 5 * s / math.sqrt(n)).all())
    np.testing.assert_allclose(out.std(0).numpy(), s, rtol=0.05)


def test_conditional_prior_posterior_by_smc():
    """sample(..., cond=) with a per-measurement condition: the SMC ensemble's posterior mean for
    each measurement against Gaussian(c_b, s^2).posterior (5 standard errors)."""
    g = torch.Generator().manual_seed(0)
    s, sigma_y = 0.7, 0.2
    A = torch.randn(2, 3, generator=g, dtype=D64)
    physics = Matrix(A, sigma=sigma_y)
    c = torch.tensor([[1.0, 0.0, -1.0], [-2.0, 2.0, 0.5]], dtype=D64)  # one condition per measurement
    y = torch.randn(2, 2, generator=g, dtype=D64)
    out = SMCEnsemble(ConditionalGaussian(s), steps=50, sigma_max=20.0, progress=False).sample(
        y, physics, n_samples=3000, generator=torch.Generator().manual_seed(1), x_shape=(3,), cond={"mean": c})
    for b in range(2):
        exact = Gaussian(c[b], s**2).posterior(A, y[b], sigma_y)
        se = exact.covariance.diagonal().sqrt() / math.sqrt(float(out.min_ess()[b]))
        assert bool(((out.mean()[b] - exact.mean).abs() < 5 * se).all()), b


def test_measurement_shape_is_checked():
    """A broadcastable but wrong y (e.g. (1, 1)) is refused before any work."""
    physics = Matrix(torch.eye(3, dtype=D64)[:2], sigma=0.1)
    with pytest.raises(ValueError, match="expected a measurement of shape"):
        make_problem(torch.zeros(1, 1, dtype=D64), physics)
