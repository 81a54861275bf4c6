"""Networks and EDM preconditioning: shapes, closed-form coefficients, the unit-variance target,
the loss of the exact Gaussian denoiser (= 1 in expectation)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from invdiff.diffusion.edm import EDMPrecond, edm_coefficients, edm_loss, loss_weight, sample_sigma
from invdiff.diffusion.networks import MLP, UNet, UNet1D, build_network

ROOT = Path(__file__).resolve().parents[1]


def test_shapes_and_sizes():
    torch.manual_seed(0)
    net = UNet(in_channels=2, channels=(8, 16, 16), blocks=1, attention=(2,))
    assert net(torch.randn(3, 2, 16, 16), torch.randn(3)).shape == (3, 2, 16, 16)
    net1 = UNet1D(in_channels=1, out_channels=3, channels=(8, 16), attention=(1,))
    assert net1(torch.randn(2, 1, 32), torch.randn(2)).shape == (2, 3, 32)
    assert MLP(dim=5, hidden=16)(torch.randn(4, 5), torch.randn(4)).shape == (4, 5)
    for name in ("ct-phantom-64", "mri-phantom-64"):  # shipped architectures: 1-5 M parameters
        cfg = json.loads((ROOT / "configs" / f"{name}.json").read_text())["network"]
        n = sum(p.numel() for p in build_network(**cfg).parameters())
        assert 1e6 <= n <= 5e6, (name, n)


def test_bad_input():
    net = UNet(in_channels=1, channels=(8, 16, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 1, 10, 10), torch.zeros(1))
    with pytest.raises(ValueError, match="rank 4"):
        net(torch.zeros(1, 10, 10), torch.zeros(1))
    with pytest.raises(ValueError, match="attention"):
        UNet(channels=(8, 16), attention=(2,))
    with pytest.raises(ValueError, match="unknown network"):
        build_network("resnet")
    D = EDMPrecond(MLP(dim=2), sigma_data=1.0)
    with pytest.raises(ValueError, match="sigma"):
        D(torch.zeros(2, 2), 0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(MLP(dim=2), sigma_data=-1.0)


def test_conditioning_and_gradients_flow():
    torch.manual_seed(0)
    net = UNet(in_channels=1, channels=(8, 16), attention=(1,))
    for p in net.parameters():  # leave the zero init so that the output depends on everything
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))
    net(x, torch.zeros(2)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_edm_coefficients_closed_forms():
    sd = 0.37
    sigma = torch.logspace(-3, 2, 50, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, sd)
    # effective training target (x0 - c_skip (x0 + sigma n)) / c_out has unit variance (EDM eq. 8)
    var = ((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2
    assert torch.allclose(var, torch.ones_like(var), atol=1e-12)
    assert torch.allclose(c_in**2 * (sigma**2 + sd**2), torch.ones_like(sigma))  # unit-variance input
    assert torch.allclose(loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma))  # lambda = 1 / c_out^2
    assert torch.allclose(c_noise, torch.log(sigma) / 4)


def test_untrained_precond_is_gaussian_shrinkage():
    # zero-initialised output layer: D(x, sigma) = mu + c_skip (x - mu), the exact denoiser of
    # N(mu, sigma_data^2 I) data
    mu, sd = 0.2, 0.3
    D = EDMPrecond(UNet(in_channels=1, channels=(8, 16)), sigma_data=sd, data_mean=mu).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 5.0], dtype=torch.float64)
    expected = mu + sd**2 / (sd**2 + sigma[:, None, None, None] ** 2) * (x - mu)
    assert torch.allclose(D(x, sigma), expected, atol=1e-12)


def test_edm_loss_of_exact_gaussian_denoiser_is_one():
    # data N(0, s^2 I), sigma_data = s: the exact denoiser has lambda(sigma) E||D - x0||^2 = 1 per
    # element for every sigma; each element is a scaled chi^2_1 (mean 1, variance 2), uncorrelated,
    # so the batch mean has standard deviation sqrt(2 / N): 5 sigma tolerance.
    s = 0.7

    class Exact:
        sigma_data = s

        def __call__(self, x, sigma):
            sig = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1)
            return s**2 / (s**2 + sig**2) * x

    g = torch.Generator().manual_seed(0)
    x0 = s * torch.randn(2000, 10, generator=g, dtype=torch.float64)
    loss = float(edm_loss(Exact(), x0, g))
    assert abs(loss - 1.0) < 5 * math.sqrt(2 / x0.numel())


def test_sigma_distribution_is_lognormal():
    g = torch.Generator().manual_seed(1)
    n = 20000
    z = torch.log(sample_sigma(n, g, P_mean=-1.2, P_std=1.2, dtype=torch.float64))
    assert abs(float(z.mean()) + 1.2) < 5 * 1.2 / math.sqrt(n)
    assert abs(float(z.std()) - 1.2) < 5 * 1.2 / math.sqrt(2 * n)
