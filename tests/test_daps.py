"""DAPS (invdiff.samplers.daps) against the closed-form posterior of a Gaussian prior."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import Matrix
from invdiff.samplers import make
from invdiff.samplers.consistency import gaussian_draw_cg
from invdiff.samplers.daps import DAPS
from invdiff.samplers.likelihood import PoissonLikelihood
from invdiff.samplers.langevin import likelihood_curvature, log_density_ratio
from invdiff.samplers.problem import make_problem

N = 1000


def _case():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 4, generator=g, dtype=torch.float64) / 2
    prior = Gaussian(torch.zeros(4, dtype=torch.float64), 1.0)
    y = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    return prior, Matrix(A, sigma=0.3), y, prior.posterior(A, y[0], 0.3)


def _check_covariance(s, post, n):
    """Sample mean and full covariance of draws ``s`` (n, d) against the closed form: each entry within
    4.5 standard errors (sd of C_ij_hat = sqrt((C_ii C_jj + C_ij^2) / n), of the mean sqrt(C_ii / n))."""
    C = post.covariance
    var = torch.diag(C)
    assert ((s.mean(0) - post.mean).abs() < 4.5 * (var / n).sqrt()).all(), s.mean(0) - post.mean
    se = ((var[:, None] * var[None, :] + C**2) / n).sqrt()
    assert ((torch.cov(s.T) - C).abs() < 4.5 * se).all(), (torch.cov(s.T) - C) / se


def test_exact_draw_matches_gaussian_posterior():
    """gaussian_draw_cg: x ~ N(x0_hat, v I), y = A x + sigma n; converged CG draws have the closed-form
    posterior's mean and full covariance (Gaussian(...).posterior)."""
    prior, physics, y, _ = _case()
    x0_hat, v, n = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=torch.float64), 0.7, 4000
    post = Gaussian(x0_hat, v).posterior(physics.matrix, y[0], 0.3)
    problem = make_problem(y, physics, n_samples=n)
    s = gaussian_draw_cg(problem, x0_hat.expand(n, 4), v, iters=4, generator=torch.Generator().manual_seed(2))
    _check_covariance(s, post, n)
    # the check has power: one CG step (P has 3 distinct eigenvalues, so CG is exact from 3 steps) fails it
    s1 = gaussian_draw_cg(problem, x0_hat.expand(n, 4), v, iters=1, generator=torch.Generator().manual_seed(2))
    with pytest.raises(AssertionError):
        _check_covariance(s1, post, n)


def test_default_daps_is_exact_on_a_gaussian_posterior():
    """Linear operator, Gaussian noise: the default second move is the exact Gaussian draw, r_t^2 is the
    exact Var[x0 | x_t] of the Gaussian prior, so every level is an exact Gibbs step and the draws follow the
    closed-form posterior (mean and full covariance, no slack beyond the sampling error)."""
    prior, physics, y, post = _case()
    out = DAPS(prior, steps=40, progress=False).sample(y, physics, n_samples=2000, generator=torch.Generator().manual_seed(1))
    assert out.trace["x0_move"] == "exact"
    _check_covariance(out.samples[:, 0], post, 2000)
    assert out.nfe == 41 and out.trace["x0_var"].shape == out.samples.shape


def test_langevin_daps_matches_gaussian_posterior():
    prior, physics, y, post = _case()
    out = DAPS(prior, steps=40, x0_move="langevin", langevin_steps=30, progress=False).sample(
        y, physics, n_samples=N, generator=torch.Generator().manual_seed(1))
    assert out.trace["x0_move"] == "langevin"
    s = out.samples[:, 0]
    var = torch.diag(post.covariance)
    # mean: 5 standard errors of the sample mean; variance: the sample variance's relative sd is
    # sqrt(2/N) = 4.5%, 4 sd plus 5% for the finite number of levels and Langevin steps
    assert ((s.mean(0) - post.mean).abs() < 5 * (var / N).sqrt()).all()
    ratio = s.var(0) / var
    assert ((ratio - 1).abs() < 4 * math.sqrt(2 / N) + 0.05).all(), ratio
    assert out.nfe == 41 and out.trace["x0_var"].shape == out.samples.shape


def test_x0_move_falls_back_to_langevin():
    """Poisson noise (or a nonlinear operator): 'auto' uses Langevin; 'exact' is refused before any work."""
    prior = Gaussian(torch.full((2,), 2.0, dtype=torch.float64), 1.0)
    physics = Matrix(torch.eye(2, dtype=torch.float64), sigma=0.1)
    y = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    out = DAPS(prior, steps=3, langevin_steps=2, progress=False).sample(y, physics, likelihood=PoissonLikelihood(1.0))
    assert out.trace["x0_move"] == "langevin" and len(out.trace["step_size"]) == 3
    with pytest.raises(ValueError, match="x0_move='exact' needs a linear operator"):
        DAPS(prior, steps=3, x0_move="exact", progress=False).sample(y, physics, likelihood=PoissonLikelihood(1.0))


def test_paper_setting_is_over_dispersed_in_the_null_space():
    """r_t = sigma_t with the ODE endpoint: the fixed point of the null-space variance is 2x (docstring)."""
    prior, physics, y, post = _case()
    out = DAPS(prior, steps=40, ode_steps=3, r="sigma", langevin_steps=30, progress=False).sample(
        y, physics, n_samples=N, generator=torch.Generator().manual_seed(1))
    ratio = out.samples[:, 0].var(0) / torch.diag(post.covariance)
    assert (ratio > 1.2).all(), ratio  # 1.3-1.6 measured; 1.2 is 4.4 sd of the variance estimate away


def test_registered_and_bad_input():
    prior = Gaussian(torch.zeros(2), 1.0)
    assert isinstance(make("daps", prior, steps=3), DAPS)
    with pytest.raises(ValueError, match="lr_scale"):
        DAPS(prior, lr_scale=3.0)
    with pytest.raises(ValueError, match="r:"):
        DAPS(prior, r="bogus")
    with pytest.raises(ValueError, match="langevin_steps"):
        DAPS(prior, langevin_steps=-1)
    with pytest.raises(ValueError, match="x0_move"):
        DAPS(prior, x0_move="mala")
    with pytest.raises(ValueError, match="cg_iters"):
        DAPS(prior, cg_iters=0)
    with pytest.raises(ValueError, match="cg_tol"):
        DAPS(prior, cg_tol=1.5)


def test_curvature_and_density_ratio():
    A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    problem = make_problem(torch.zeros(1, 2, dtype=torch.float64), Matrix(A, sigma=0.5))
    assert likelihood_curvature(problem) == pytest.approx(9.0 / 0.25, rel=1e-3)  # ||A||^2 / sigma^2
    x, x2 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    exact = -0.5 * (x2**2).sum(1) + 0.5 * (x**2).sum(1)  # N(0, I): exact for affine scores
    assert torch.allclose(log_density_ratio(x, x2, -x, -x2), exact)
