"""RED-Diff against exact references: the closed-form expected regulariser of a Gaussian prior,
the reference code's averaged loss (lambda conversion), and the exact posterior mean."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import Matrix
from invdiff.samplers import REDDiff
from invdiff.samplers.red_diff import WEIGHTINGS

D_X, D_Y, M_PRIOR, S2_PRIOR, SIGMA_Y = 4, 2, 0.5, 2.0, 0.2

pytestmark = pytest.mark.usefixtures("one_thread")



def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(D_Y, D_X, generator=g, dtype=torch.float64)
    physics = Matrix(A, sigma=SIGMA_Y)
    prior = Gaussian(torch.full((D_X,), M_PRIOR, dtype=torch.float64), S2_PRIOR)
    x = prior.sample(1, generator=g)
    y = x @ A.T + SIGMA_Y * torch.randn(1, D_Y, generator=g, dtype=torch.float64)
    return A, physics, prior, y


def _sigmas(n=60):
    return torch.logspace(1, -2, n, dtype=torch.float64)


def closed_form_iteration(A, y, sigmas, lam, lr=0.1, betas=(0.9, 0.99), weighting="snr"):
    """RED-Diff driven by the exact expectation E[eps_hat - eps] = sigma (mu - m) / (s^2 + sigma^2)."""
    mu = torch.nn.Parameter(torch.linalg.pinv(A) @ y[0])
    opt = torch.optim.Adam([mu], lr=lr, betas=betas)
    for s in sigmas.tolist():
        data = A.T @ (A @ mu.detach() - y[0]) / SIGMA_Y**2
        reg = s * (mu.detach() - M_PRIOR) / (S2_PRIOR + s**2)
        opt.zero_grad()
        mu.grad = data + lam * WEIGHTINGS[weighting](s) * reg
        opt.step()
    return mu.detach()


def test_vp_and_ve_closed_forms_agree():
    # the VP form sigma_vp alpha (mu - m) / (alpha^2 s^2 + sigma_vp^2) equals the VE form
    for sigma in (0.05, 1.0, 30.0):
        alpha = 1 / math.sqrt(1 + sigma**2)
        s_vp = sigma * alpha
        ve = sigma / (S2_PRIOR + sigma**2)
        vp = s_vp * alpha / (alpha**2 * S2_PRIOR + s_vp**2)
        assert vp == pytest.approx(ve, rel=1e-12)


def test_regulariser_expectation_matches_closed_form():
    # one step's noise-averaged eps_hat - eps, against sigma (mu - m) / (s^2 + sigma^2);
    # per coordinate the draws have std s^2 / (s^2 + sigma^2) <= 1, so 6 / sqrt(K) bounds it
    A, physics, prior, y = _problem()
    K = 20000
    mu = torch.randn(1, D_X, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    for sigma in (0.1, 1.0, 5.0):
        eps = torch.randn(K, D_X, generator=g, dtype=torch.float64)
        x = mu + sigma * eps
        eps_hat = (x - prior(x, sigma)) / sigma
        est = (eps_hat - eps).mean(0)
        exact = sigma * (mu[0] - M_PRIOR) / (S2_PRIOR + sigma**2)
        std = S2_PRIOR / (S2_PRIOR + sigma**2)
        assert (est - exact).abs().max() < 6 * std / math.sqrt(K)


def test_implementation_matches_closed_form_iteration():
    """With K noise draws per step, the implementation follows the closed-form iteration.

    Each of M independent copies sees its own noise; their mean must match the deterministic
    iteration within 6 standard errors (estimated from the copies), plus a small allowance
    for Adam's O(1/K) bias."""
    A, physics, prior, y = _problem()
    sigmas, lam = _sigmas(), 3.0
    ref = closed_form_iteration(A, y, sigmas, lam)
    M, K = 32, 256
    out = REDDiff(prior, sigmas=sigmas, lam=lam, n_noise=K, progress=False).sample(
        y, physics, n_samples=M, generator=torch.Generator().manual_seed(3)
    )
    mus = out.samples[:, 0]  # (M, d)
    mean, sem = mus.mean(0), mus.std(0) / math.sqrt(M)
    assert ((mean - ref).abs() <= 6 * sem + 1e-3).all(), (mean, ref, sem)
    # and the copies are close to it individually: the noise is small at K = 256
    assert (mus - ref).norm(dim=1).max() < 0.05 * ref.norm()
    # the iteration moved far from its start (the test cannot pass by not moving)
    start = torch.linalg.pinv(A) @ y[0]
    assert (ref - start).norm() > 20 * (mean - ref).norm()
    assert out.nfe == K * len(sigmas)


def test_distance_to_posterior_mean_is_reported(capsys):
    """RED-Diff is mode seeking: report (not assert) its distance to the exact posterior mean."""
    A, physics, prior, y = _problem()
    post = prior.posterior(A, y[0], SIGMA_Y)
    exact = post.mean
    ref = closed_form_iteration(A, y, _sigmas(200), lam=1.0)
    mu = REDDiff(prior, sigmas=_sigmas(200), lam=1.0, n_noise=64, progress=False)(
        y, physics, generator=torch.Generator().manual_seed(4)
    )[0]
    pinv = torch.linalg.pinv(A) @ y[0]
    print(f"\nRED-Diff |mu - E[x|y]| = {float((mu - exact).norm()):.4f}, closed-form iteration "
          f"{float((ref - exact).norm()):.4f}, pinv baseline {float((pinv - exact).norm()):.4f}")
    assert torch.isfinite(mu).all()


def test_lambda_conversion_reproduces_reference_averaged_loss():
    """lam=None converts lambda_ref: same iterates as the reference code's mean-based loss."""
    A, physics, prior, y = _problem()
    sigmas = _sigmas(30)
    seed = 5
    out = REDDiff(prior, sigmas=sigmas, lam_ref=0.25, progress=False).sample(
        y, physics, generator=torch.Generator().manual_seed(seed)
    )
    # independent re-implementation of the reference code's update (autograd through means)
    g = torch.Generator().manual_seed(seed)
    mu = torch.nn.Parameter(torch.linalg.pinv(A) @ y[0])
    opt = torch.optim.Adam([mu], lr=0.1, betas=(0.9, 0.99), eps=1e-12)
    for s in sigmas.tolist():
        eps = torch.randn(1, D_X, generator=g, dtype=torch.float64)[0]
        x = mu.detach() + s * eps
        with torch.no_grad():
            eps_hat = (x - prior(x[None], s)[0]) / s
        loss = ((y[0] - A @ mu) ** 2).mean() / 2 + 0.25 * s * ((eps_hat - eps) * mu).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Adam is invariant to the global gradient scale (up to its eps = 1e-8 on our side)
    torch.testing.assert_close(out.samples[0, 0], mu.detach(), rtol=1e-5, atol=1e-6)


def test_no_backprop_through_network():
    A, physics, prior, y = _problem()

    def D(x, sigma):
        assert not torch.is_grad_enabled() and not x.requires_grad
        return prior(x, sigma)

    REDDiff(D, steps=5, progress=False).sample(y, physics, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("weighting", sorted(WEIGHTINGS))
def test_weightings_follow_closed_form(weighting):
    A, physics, prior, y = _problem()
    sigmas = _sigmas(20)
    ref = closed_form_iteration(A, y, sigmas, lam=3.0, weighting=weighting)
    mus = REDDiff(prior, sigmas=sigmas, lam=3.0, weighting=weighting, n_noise=4096, progress=False).sample(
        y, physics, generator=torch.Generator().manual_seed(6)
    ).samples[0, 0]
    assert (mus - ref).norm() < 0.02 * (ref.norm() + 1)


def test_deterministic_with_generator_and_init_options():
    A, physics, prior, y = _problem()
    s = REDDiff(prior, steps=10, progress=False)
    a = s(y, physics, generator=torch.Generator().manual_seed(1))
    b = s(y, physics, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    z = REDDiff(prior, steps=10, init="zeros", progress=False)
    assert not torch.equal(z(y, physics, generator=torch.Generator().manual_seed(1)), a)
    with pytest.raises(ValueError, match="init: expected shape"):
        REDDiff(prior, steps=3, init=torch.zeros(1, 3), progress=False)(y, physics)


def test_float32_and_trajectory():
    A, physics, prior, y = _problem()
    prior32 = Gaussian(torch.full((D_X,), M_PRIOR), S2_PRIOR)
    out = REDDiff(prior32, steps=8, progress=False).sample(
        y.float(), Matrix(A.float(), sigma=SIGMA_Y), n_samples=3, record_every=4
    )
    assert out.samples.dtype == torch.float32 and out.samples.shape == (3, 1, D_X)
    assert out.trace["trajectory_steps"] == [0, 4, 8]
    assert out.trace["trajectory"].shape == (3, 3, 1, D_X)
    assert torch.equal(out.trace["trajectory"][-1], out.samples)


def test_bad_arguments():
    A, physics, prior, y = _problem()
    with pytest.raises(ValueError, match="weighting"):
        REDDiff(prior, weighting="nope")
    with pytest.raises(ValueError, match="lr"):
        REDDiff(prior, lr=0.0)
    with pytest.raises(ValueError, match="sigmas"):
        REDDiff(prior, sigmas=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="n_noise"):
        REDDiff(prior, n_noise=0)


def test_deepinv_physics_and_baseline_init():
    """Works with a deepinv operator; init='baseline' starts from its A_dagger (masked y here)."""
    import deepinv as dinv

    physics = dinv.physics.Inpainting(img_size=(1, 6, 6), mask=0.5, noise_model=dinv.physics.GaussianNoise(0.05),
                                      rng=torch.Generator().manual_seed(0))
    prior = Gaussian(torch.full((1, 6, 6), 0.5), 0.1)
    y = physics(torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(1)))
    out = REDDiff(prior, steps=1, lr=1e-12, progress=False).sample(y, physics)  # one negligible step
    torch.testing.assert_close(out.samples[0], physics.A_dagger(y), atol=1e-6, rtol=0)
    mu = REDDiff(prior, steps=20, progress=False)(y, physics, generator=torch.Generator().manual_seed(0))
    assert mu.shape == (1, 1, 6, 6) and torch.isfinite(mu).all()
