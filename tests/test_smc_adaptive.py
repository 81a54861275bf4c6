"""Adaptive SMC (invdiff.samplers.smc.adaptive) against closed-form Gaussian and mixture posteriors."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import Matrix
from invdiff.samplers import make
from invdiff.samplers.smc.adaptive import AdaptiveSMC

N = 512


def test_gaussian_posterior_and_ess_kept():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2, 4, generator=g, dtype=torch.float64) / 2
    prior = Gaussian(torch.zeros(4, dtype=torch.float64), 1.0)
    y = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    post = prior.posterior(A, y[0], 0.05)
    out = AdaptiveSMC(prior, steps=60, progress=False).sample(y.repeat(2, 1), Matrix(A, sigma=0.05), n_samples=N,
                                                            generator=torch.Generator().manual_seed(1))
    var = torch.diag(post.covariance)
    n_eff = float(out.min_ess().min())
    assert not out.trace["forced"] and n_eff >= 0.35 * N * 0.99  # CESS >= 0.7 N after ESS >= 0.5 N
    # weighted SMC estimates: the standard error is at most sqrt(var / ESS_min) up to path
    # degeneracy; 6 such units for the mean, and for the variance 6 sd of a variance estimate
    # from n_eff draws plus 10% for the finite number of levels
    assert ((out.mean() - post.mean).abs() < 6 * (var / n_eff).sqrt()).all()
    ratio = out.std() ** 2 / var
    assert ((ratio - 1).abs() < 6 * math.sqrt(2 / n_eff) + 0.1).all(), ratio
    assert len(out.trace["acceptance"]) > 0 and all(0 <= a <= 1 for a in out.trace["acceptance"])


def test_bimodal_weights():
    """Two well-separated modes: the weighted mass of the mode at +3 matches the exact posterior weight."""
    from invdiff.diffusion.gmm import GaussianMixture

    prior = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                            torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=torch.float64), 0.25)
    A = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # sees only the second coordinate
    y = torch.tensor([[0.2]], dtype=torch.float64)
    post = prior.posterior(A, y[0], 0.5)
    out = AdaptiveSMC(prior, steps=60, sigma_max=20.0, progress=False).sample(
        y, Matrix(A, sigma=0.5), n_samples=N, generator=torch.Generator().manual_seed(2))
    share = float((out.weights()[:, 0] * (out.samples[:, 0, 0] > 0)).sum())
    exact = float(post.weights[1])
    n_eff = float(out.min_ess())
    assert abs(share - exact) < 5 * math.sqrt(exact * (1 - exact) / n_eff) + 0.05


def test_registry_and_bad_input():
    prior = Gaussian(torch.zeros(2), 1.0)
    assert isinstance(make("smc-adaptive", prior, steps=5), AdaptiveSMC)
    with pytest.raises(ValueError, match="target_ess"):
        AdaptiveSMC(prior, target_ess=1.5)
    with pytest.raises(ValueError, match="mala_steps"):
        AdaptiveSMC(prior, mala_steps=-1)
    with pytest.raises(ValueError, match="twist_scale"):
        AdaptiveSMC(prior, twist_scale=0)
