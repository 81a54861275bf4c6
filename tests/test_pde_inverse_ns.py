"""Tests of the Navier-Stokes vorticity inverse problem (invdiff.surrogates.ns_vorticity): the
Fourier-multiplier denoiser and prior energy against the exact Gaussian built from the random
field's own linear map, the sub-sampling, the training-data generator, bad input."""
from __future__ import annotations

import pytest
import torch

import invdiff.datasets.pde as pde_data
from invdiff.diffusion.gmm import Gaussian
from invdiff.surrogates.ns_vorticity import GRFPrior, VorticityProblem, make_generator

N = 8


@pytest.fixture(scope="module")
def covariance():
    """C = M M^T of the prior's linear map z -> w (the generator's white noise replaced by the unit basis)."""
    prob = VorticityProblem.__new__(VorticityProblem)
    prob.n = N
    orig = pde_data.randn
    pde_data.randn = lambda shape, generator=None, dtype=None, **kw: torch.eye(N * N, dtype=dtype).reshape(N * N, N, N)
    try:
        rows = VorticityProblem.sample(prob, N * N, dtype=torch.float64).reshape(N * N, N * N)  # row i = M e_i
    finally:
        pde_data.randn = orig
    return rows.T @ rows


@pytest.mark.parametrize("sigma", [0.05, 1.0, 20.0])
def test_grf_denoiser_is_the_exact_gaussian_denoiser(covariance, sigma):
    x = torch.randn(3, 1, N, N, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = Gaussian(torch.zeros(N * N, dtype=torch.float64), covariance + 1e-12 * torch.eye(N * N, dtype=torch.float64))
    expected = ref(x.reshape(3, N * N), sigma).reshape(3, 1, N, N)
    got = GRFPrior(N).double()(x, sigma)
    assert (got - expected).abs().max() < 1e-6 * expected.abs().max()


def test_grf_energy_is_the_gaussian_quadratic(covariance):
    w = torch.randn(2, 1, N, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = w - w.mean((-2, -1), keepdim=True)  # the prior has no mean mode
    quad = 0.5 * torch.einsum("bi,ij,bj->b", w.reshape(2, -1), torch.linalg.pinv(covariance, hermitian=True), w.reshape(2, -1))
    torch.testing.assert_close(GRFPrior(N).double().neg_log_prob(w), quad, rtol=1e-6, atol=0)


def test_observe_and_bad_factor():
    w = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    y = VorticityProblem.observe(w, 4)
    assert y.shape == (2, 1, 4, 4) and y[0, 0, 1, 2] == w[0, 0, 4, 8]
    with pytest.raises(ValueError, match="divisor"):
        VorticityProblem.observe(w, 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        VorticityProblem(n=12)


def test_training_generator_variance_matches_the_prior(covariance):
    w = make_generator(n=N)(2000, generator=torch.Generator().manual_seed(0))
    assert w.shape == (2000, 1, N, N) and w.dtype == torch.float32
    ms = w.double().pow(2).mean((1, 2, 3))  # per-field mean square; E = trace(C) / N^2
    z = (ms.mean() - covariance.trace() / N**2) / (ms.std() / 2000**0.5)
    assert abs(z) < 5
