"""Exact Gaussian-mixture prior: checked against quadrature, closed forms, scipy and Monte Carlo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from invdiff.diffusion import gmm as gmm_module
from invdiff.diffusion.gmm import Gaussian, GaussianMixture

F64 = torch.float64


def _random_spd(K, d, gen, scale=1.0):
    B = torch.randn(K, d, d, generator=gen, dtype=F64)
    return scale * (B @ B.transpose(-1, -2) / d + 0.1 * torch.eye(d, dtype=F64))


def _mixture(kind, K=3, d=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(K, generator=gen, dtype=F64) + 0.2
    means = 3.0 * torch.randn(K, d, generator=gen, dtype=F64)
    if kind == "scalar":
        covs = torch.rand(K, generator=gen, dtype=F64) + 0.3
    elif kind == "diag":
        covs = torch.rand(K, d, generator=gen, dtype=F64) + 0.3
    elif kind == "full":
        covs = _random_spd(K, d, gen)
    elif kind == "zero":
        covs = 0.0
    return GaussianMixture(w, means, covs)


def _scipy_logpdf(prior, x, sigma):
    """log p_sigma(x) by scipy.stats, component by component (an independent implementation)."""
    covs = prior.covs.numpy() + sigma**2 * np.eye(prior.dim)
    comps = [
        np.log(w) + stats.multivariate_normal(m, c, allow_singular=False).logpdf(x)
        for w, m, c in zip(prior.weights.numpy(), prior.means_flat.numpy(), covs)
    ]
    return np.logaddexp.reduce(np.stack(comps), axis=0)


# ----------------------------------------------------------------------------- denoiser
@pytest.mark.parametrize("kind", ["scalar", "diag", "full"])
def test_gaussian_denoiser_closed_form(kind):
    gen = torch.Generator().manual_seed(1)
    d = 4
    mu = torch.randn(d, generator=gen, dtype=F64)
    cov = {"scalar": torch.tensor(2.5, dtype=F64), "diag": torch.rand(d, generator=gen, dtype=F64) + 0.5,
           "full": _random_spd(1, d, gen)[0]}[kind]
    C = cov * torch.eye(d, dtype=F64) if cov.ndim == 0 else (torch.diag(cov) if cov.ndim == 1 else cov)
    prior = Gaussian(mu, cov)
    assert prior.kind == kind
    x = 3 * torch.randn(5, d, generator=gen, dtype=F64)
    for sigma in (1e-3, 0.7, 30.0):
        expected = mu + torch.linalg.solve(C + sigma**2 * torch.eye(d, dtype=F64), C @ (x - mu).T).T
        torch.testing.assert_close(prior(x, sigma), expected, rtol=1e-10, atol=1e-10)
    if kind == "scalar":  # the textbook form s^2 / (s^2 + sigma^2) (x - mu) + mu
        torch.testing.assert_close(prior(x, 1.3), 2.5 / (2.5 + 1.69) * (x - mu) + mu, rtol=1e-12, atol=1e-12)


def test_denoiser_1d_matches_quadrature():
    prior = GaussianMixture(torch.tensor([0.2, 0.5, 0.3], dtype=F64), torch.tensor([[-3.0], [0.5], [4.0]], dtype=F64),
                            torch.tensor([0.4, 1.0, 0.1], dtype=F64))
    w, m, c = prior.weights.numpy(), prior.means_flat.numpy()[:, 0], prior.lam.numpy()
    p0 = lambda t: sum(wk * stats.norm.pdf(t, mk, math.sqrt(ck)) for wk, mk, ck in zip(w, m, c))
    for x, sigma in [(-2.0, 0.5), (1.0, 1.5), (3.7, 0.2), (10.0, 3.0)]:
        lik = lambda t: p0(t) * stats.norm.pdf(x, t, sigma)
        num = integrate.quad(lambda t: t * lik(t), -30, 30, points=list(m), limit=400, epsabs=1e-13)[0]
        den = integrate.quad(lik, -30, 30, points=list(m), limit=400, epsabs=1e-13)[0]
        got = prior(torch.tensor([[x]], dtype=F64), sigma).item()
        assert got == pytest.approx(num / den, rel=1e-7, abs=1e-8)
        lp = prior.log_prob(torch.tensor([[x]], dtype=F64), sigma).item()
        assert lp == pytest.approx(math.log(den), rel=1e-7)


def test_denoiser_2d_full_matches_grid_quadrature():
    prior = _mixture("full", K=3, d=2, seed=3)
    xs = prior.means_flat.numpy()
    lo, hi = xs.min() - 8, xs.max() + 8
    g = np.linspace(lo, hi, 801)
    X0 = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    p0 = np.exp(_scipy_logpdf(prior, X0, 0.0))
    for x, sigma in [((0.3, -1.0), 0.8), ((2.0, 2.0), 2.0)]:
        lik = p0 * stats.multivariate_normal(np.array(x), sigma**2 * np.eye(2)).pdf(X0)
        expected = (X0 * lik[:, None]).sum(0) / lik.sum()
        got = prior(torch.tensor([x], dtype=F64), sigma)[0].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_denoiser_matches_monte_carlo_posterior_mean():
    """E[x0 | x] by self-normalised importance sampling from the prior; bound: 5 standard errors."""
    prior = _mixture("full", K=4, d=3, seed=5)
    gen = torch.Generator().manual_seed(6)
    n = 400_000
    x0 = prior.sample(n, generator=gen)
    sigma = 1.5
    x = x0[:1] + sigma * torch.randn(1, 3, generator=gen, dtype=F64)
    logw = -0.5 * ((x - x0) ** 2).sum(-1) / sigma**2
    w = torch.softmax(logw, 0)
    est = (w[:, None] * x0).sum(0)
    se = ((w[:, None] ** 2) * (x0 - est) ** 2).sum(0).sqrt()
    assert 1 / (w**2).sum() > 1000  # enough effective samples for the normal approximation
    got = prior(x, sigma)[0]
    assert bool(((got - est).abs() <= 5 * se).all()), (got, est, se)


@pytest.mark.parametrize("kind", ["scalar", "diag", "full", "zero"])
def test_score_is_gradient_of_log_prob(kind):
    prior = _mixture(kind, K=3, d=4, seed=7)
    gen = torch.Generator().manual_seed(8)
    x = (prior.sample(6, generator=gen) + torch.randn(6, 4, generator=gen, dtype=F64)).requires_grad_(True)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 0.3], dtype=F64)
    (grad,) = torch.autograd.grad(prior.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(prior.score(x.detach(), sigma), grad, rtol=1e-9, atol=1e-10)
    # Tweedie: D = x + sigma^2 * score
    torch.testing.assert_close(prior(x.detach(), sigma), x.detach() + sigma[:, None] ** 2 * grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["scalar", "diag", "full"])
def test_log_prob_matches_scipy(kind):
    prior = _mixture(kind, K=3, d=3, seed=9)
    x = prior.sample(7, generator=torch.Generator().manual_seed(10)) + 0.5
    for sigma in (0.0, 0.8):
        np.testing.assert_allclose(prior.log_prob(x, sigma).numpy(), _scipy_logpdf(prior, x.numpy(), sigma), rtol=1e-10)


def test_batched_sigma_equals_per_row_and_chunking(monkeypatch):
    prior = _mixture("full", K=5, d=3, seed=11)
    gen = torch.Generator().manual_seed(12)
    x = 3 * torch.randn(9, 3, generator=gen, dtype=F64)
    sigma = torch.linspace(0.05, 4.0, 9, dtype=F64)
    out = prior(x, sigma)
    rows = torch.cat([prior(x[i : i + 1], float(sigma[i])) for i in range(9)])
    torch.testing.assert_close(out, rows, rtol=1e-12, atol=1e-12)
    monkeypatch.setattr(gmm_module, "_CHUNK_ELEMENTS", 20)  # forces chunks of one row
    torch.testing.assert_close(prior(x, sigma), out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.responsibilities(x, sigma).sum(-1), torch.ones(9, dtype=F64))


def test_empirical_prior_images_is_softmax_average():
    """Zero covariance: D(x, sigma) = sum_i softmax_i(-|x - x_i|^2 / 2 sigma^2) x_i over the set (numpy)."""
    gen = torch.Generator().manual_seed(13)
    images = torch.rand(300, 1, 32, 32, generator=gen, dtype=F64)
    prior = GaussianMixture(torch.ones(300, dtype=F64), images, 0.0)
    x = images[:3] + 0.3 * torch.randn(3, 1, 32, 32, generator=gen, dtype=F64)
    imgs = images.reshape(300, -1).numpy()
    for sigma in (0.05, 0.3, 3.0):
        out = prior(x, sigma)
        assert out.shape == x.shape
        xf = x.reshape(3, -1).numpy()
        logit = -((xf[:, None, :] - imgs[None]) ** 2).sum(-1) / (2 * sigma**2)
        r = np.exp(logit - logit.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)
        np.testing.assert_allclose(out.reshape(3, -1).numpy(), r @ imgs, rtol=1e-9, atol=1e-12)
    # float32 at a small sigma picks the right image (no |x|^2 - 2 x.m + |m|^2 cancellation)
    out32 = prior.float()(images[5:6].float() + 1e-4, 1e-3)
    torch.testing.assert_close(out32, images[5:6].float(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind", ["scalar", "diag", "full"])
def test_sample_moments_and_mode_weights(kind):
    prior = _mixture(kind, K=3, d=3, seed=14)
    n = 100_000
    x, k = prior.sample_components(n, generator=torch.Generator().manual_seed(15))
    assert x.shape == (n, 3) and x.dtype == F64
    # mode frequencies: binomial z-score <= 5
    p = prior.weights
    freq = torch.bincount(k, minlength=3).to(F64) / n
    assert bool(((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt()).all())
    # mean: 5 standard errors from the mixture covariance
    cov = prior.covariance
    assert bool(((x.mean(0) - prior.mean).abs() <= 5 * (cov.diagonal() / n).sqrt()).all())
    # covariance: Var(x_i x_j) estimated from the samples, 5 standard errors
    xc = x - x.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]
    se = prods.std(0) / math.sqrt(n)
    assert bool(((prods.mean(0) - cov).abs() <= 5 * se + 1e-12).all())
    # mixture covariance formula against numpy on the component parameters
    w, M, C = prior.weights.numpy(), prior.means_flat.numpy(), prior.covs.numpy()
    mu = w @ M
    np.testing.assert_allclose(cov.numpy(), np.einsum("k,kij->ij", w, C + np.einsum("ki,kj->kij", M, M)) - np.outer(mu, mu), atol=1e-10)


def test_sample_is_deterministic_with_generator():
    prior = _mixture("full", seed=16)
    a = prior.sample(10, generator=torch.Generator().manual_seed(0))
    b = prior.sample(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["scalar", "diag", "full", "zero"])
def test_float32_agrees_with_float64(kind):
    prior = _mixture(kind, K=4, d=5, seed=17)
    x = prior.sample(8, generator=torch.Generator().manual_seed(18)) + 0.3
    for sigma in (1e-2, 1.0, 1e3):
        d64 = prior(x, sigma)
        d32 = prior(x.float(), sigma)
        assert d32.dtype == torch.float32
        torch.testing.assert_close(d32.double(), d64, rtol=1e-4, atol=1e-4 * (1 + sigma))
        s64, s32 = prior.score(x, sigma), prior.score(x.float(), sigma)
        torch.testing.assert_close(s32.double(), s64, rtol=1e-3, atol=1e-3 * s64.abs().max().item())


# ----------------------------------------------------------------------------- posterior
def test_posterior_gaussian_equals_information_form():
    """K = 1: the Kalman update (Joseph form) against the information form (C^-1 + A^T A / s^2)^-1."""
    gen = torch.Generator().manual_seed(19)
    d, m, sy = 5, 3, 0.4
    mu = torch.randn(d, generator=gen, dtype=F64)
    C = _random_spd(1, d, gen)[0]
    A = torch.randn(m, d, generator=gen, dtype=F64)
    y = torch.randn(m, generator=gen, dtype=F64)
    post = Gaussian(mu, C).posterior(A, y, sy)
    P = torch.linalg.inv(torch.linalg.inv(C) + A.T @ A / sy**2)
    torch.testing.assert_close(post.covariance, P, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(post.mean, P @ (torch.linalg.solve(C, mu) + A.T @ y / sy**2), rtol=1e-9, atol=1e-11)
    # scalar covariance gives the same as the equivalent full one; y may be (1, m)
    post_s = Gaussian(mu, 2.0).posterior(A, y[None], sy)
    post_f = Gaussian(mu, 2.0 * torch.eye(d, dtype=F64)).posterior(A, y, sy)
    torch.testing.assert_close(post_s.covariance, post_f.covariance, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["scalar", "full"])
def test_posterior_matches_importance_sampling(kind):
    """Self-normalised IS from the prior: posterior mean and mode weights within 5 standard errors."""
    prior = _mixture(kind, K=4, d=3, seed=20)
    gen = torch.Generator().manual_seed(21)
    A = torch.randn(2, 3, generator=gen, dtype=F64)
    sy = 1.0
    x_true = prior.sample(1, generator=gen)[0]
    y = A @ x_true + sy * torch.randn(2, generator=gen, dtype=F64)
    post = prior.posterior(A, y, sy)

    n = 400_000
    x0, k = prior.sample_components(n, generator=gen)
    w = torch.softmax(-0.5 * ((y - x0 @ A.T) ** 2).sum(-1) / sy**2, 0)
    assert 1 / (w**2).sum() > 2000
    est = (w[:, None] * x0).sum(0)
    se = ((w[:, None] ** 2) * (x0 - est) ** 2).sum(0).sqrt()
    assert bool(((post.mean - est).abs() <= 5 * se).all()), (post.mean, est, se)
    onehot = torch.nn.functional.one_hot(k, prior.n_components).to(F64)
    est_w = w @ onehot
    se_w = ((w[:, None] ** 2) * (onehot - est_w) ** 2).sum(0).sqrt()
    # the plug-in standard error underestimates for rare modes; also allow the binomial one at the ESS
    ess = 1 / (w**2).sum()
    se_w = torch.maximum(se_w, (post.weights * (1 - post.weights) / ess).sqrt())
    assert bool(((post.weights - est_w).abs() <= 5 * se_w).all()), (post.weights, est_w, se_w)


def test_posterior_zero_covariance_is_reweighting():
    gen = torch.Generator().manual_seed(22)
    images = torch.rand(50, 1, 4, 4, generator=gen, dtype=F64)
    prior = GaussianMixture(torch.rand(50, generator=gen, dtype=F64) + 0.1, images, 0.0)

    class Op:  # any object with a .matrix attribute
        matrix = torch.randn(6, 16, generator=gen, dtype=F64)

    y = Op.matrix @ images[7].reshape(-1) + 0.1 * torch.randn(6, generator=gen, dtype=F64)
    post = prior.posterior(Op(), y, 0.1)
    assert post.kind == "scalar" and bool((post.lam == 0).all())
    torch.testing.assert_close(post.means, images)
    logit = prior.log_weights - 0.5 * ((y - images.reshape(50, -1) @ Op.matrix.T) ** 2).sum(-1) / 0.01
    torch.testing.assert_close(post.weights, torch.softmax(logit, 0), rtol=1e-10, atol=1e-14)


def test_posterior_of_diagonal_mixture_matches_full():
    prior_d = _mixture("diag", K=3, d=4, seed=23)
    prior_f = GaussianMixture(prior_d.weights, prior_d.means, prior_d.covs)
    gen = torch.Generator().manual_seed(24)
    A, y = torch.randn(2, 4, generator=gen, dtype=F64), torch.randn(2, generator=gen, dtype=F64)
    pd, pf = prior_d.posterior(A, y, 0.3), prior_f.posterior(A, y, 0.3)
    torch.testing.assert_close(pd.weights, pf.weights)
    torch.testing.assert_close(pd.covariance, pf.covariance)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors():
    prior = _mixture("full", K=2, d=3)
    x = torch.zeros(4, 3, dtype=F64)
    with pytest.raises(ValueError, match="sigma"):
        prior(x, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        prior(x, -1.0)
    with pytest.raises(ValueError, match="sigma"):
        prior(x, torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="expected shape"):
        prior(torch.zeros(4, 2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        prior(torch.full((4, 3), float("nan"), dtype=F64), 1.0)
    with pytest.raises(TypeError, match="floating"):
        prior(torch.zeros(4, 3, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="singular"):
        _mixture("zero").log_prob(torch.zeros(1, 2, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="semi-definite"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.0], [0.0, -1.0]]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.ones(3), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="A: expected shape"):
        prior.posterior(torch.ones(2, 4, dtype=F64), torch.zeros(2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="y: expected shape"):
        prior.posterior(torch.ones(2, 3, dtype=F64), torch.zeros(3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="sigma_y"):
        prior.posterior(torch.ones(2, 3, dtype=F64), torch.zeros(2, dtype=F64), 0.0)
    with pytest.raises(TypeError, match="matrix"):
        prior.posterior("A", torch.zeros(2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="n:"):
        prior.sample(0)
