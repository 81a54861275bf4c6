"""Noise schedules against closed forms and independent numpy/scipy definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from invdiff.diffusion.schedules import VPSchedule, ddpm_sigmas, karras_sigmas, loglinear_sigmas, vp_sigmas


def test_karras_matches_edm_formula():
    n, smin, smax, rho = 18, 0.002, 80.0, 7.0
    i = np.arange(n)
    ref = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho  # EDM eq. 5
    s = karras_sigmas(n, smin, smax, rho)
    assert s.dtype == torch.float64 and s.shape == (n + 1,)
    np.testing.assert_allclose(s[:-1].numpy(), ref, rtol=1e-13)
    assert s[-1] == 0 and s[0] == smax and math.isclose(s[-2].item(), smin, rel_tol=1e-12)
    assert karras_sigmas(n, smin, smax, append_zero=False).shape == (n,)


def test_karras_rho1_is_linear_and_loglinear_is_geometric():
    np.testing.assert_allclose(karras_sigmas(4, 1.0, 4.0, rho=1.0).numpy(), [4, 3, 2, 1, 0], rtol=1e-14)
    s = loglinear_sigmas(6, 0.01, 10.0, append_zero=False).numpy()
    np.testing.assert_allclose(np.diff(np.log(s)), np.full(5, math.log(1e-3) / 5), rtol=1e-12)
    assert s[0] == pytest.approx(10.0) and s[-1] == pytest.approx(0.01)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_vp_sigma_is_ve_equivalent_and_t_inverts_it(kind):
    vp = VPSchedule(kind)
    t = torch.linspace(1e-3, 0.99, 50, dtype=torch.float64)
    if kind == "linear":  # abar(t) = exp(-int_0^t beta(s) ds), beta linear (Song et al. 2021)
        beta = lambda s: 0.1 + s * (20.0 - 0.1)
        abar = np.array([math.exp(-integrate.quad(beta, 0, ti)[0]) for ti in t.tolist()])
    else:  # Nichol & Dhariwal 2021, eq. 17
        f = lambda ti: math.cos((ti + 0.008) / 1.008 * math.pi / 2) ** 2
        abar = np.array([f(ti) / f(0.0) for ti in t.tolist()])
    np.testing.assert_allclose(vp.alpha(t).numpy(), np.sqrt(abar), rtol=1e-10)
    np.testing.assert_allclose(vp.sigma(t).numpy(), np.sqrt((1 - abar) / abar), rtol=1e-9)
    np.testing.assert_allclose(vp.alpha(t).numpy(), 1 / np.sqrt(1 + vp.sigma(t).numpy() ** 2), rtol=1e-12)
    np.testing.assert_allclose(vp.t(vp.sigma(t)).numpy(), t.numpy(), rtol=1e-9, atol=1e-12)


def test_vp_ve_conversions_map_the_forward_processes():
    vp, g = VPSchedule("cosine"), torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64)
    a = vp.alpha(t)[:, None]
    x_vp = a * x0 + torch.sqrt(1 - a**2) * eps  # VP forward process
    x_ve = x0 + vp.sigma(t)[:, None] * eps  # VE forward process at the equivalent sigma
    torch.testing.assert_close(vp.to_ve(x_vp, t), x_ve, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vp.to_vp(x_ve, t), x_vp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vp.to_ve(x_vp.float(), 0.5), x_vp.float() / vp.alpha(0.5).float())


def test_discrete_ddpm_linear_schedule():
    vp = VPSchedule("linear")
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # Ho et al. 2020
    np.testing.assert_allclose(vp.discrete_alphas_cumprod().numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(vp.discrete_sigmas().numpy(), np.sqrt((1 - abar) / abar), rtol=1e-12)
    # the continuous schedule is the T -> inf limit, abar_i ~ abar((i + 1) / T), up to the Riemann sum of a
    # growing beta (about 5% relative at the smallest sigmas) and -log(1 - b) = b + O(b^2)
    # (sum_j b_j^2 / 2 <= 0.07, i.e. 3.5% in sigma at the largest)
    cont = vp.sigma(torch.arange(1, 1001, dtype=torch.float64) / 1000).numpy()
    np.testing.assert_allclose(vp.discrete_sigmas().numpy(), cont, rtol=0.05)


def test_discrete_ddpm_cosine_schedule():
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
    t = np.arange(1001) / 1000
    betas = np.minimum(1 - f(t[1:]) / f(t[:-1]), 0.999)  # Nichol & Dhariwal 2021
    np.testing.assert_allclose(VPSchedule("cosine").discrete_alphas_cumprod().numpy(), np.cumprod(1 - betas), rtol=1e-10)


def test_ddpm_index_inverts_discrete_sigmas():
    vp = VPSchedule("linear")
    s = vp.discrete_sigmas()
    idx = torch.tensor([0, 1, 17, 500, 998, 999])
    torch.testing.assert_close(vp.ddpm_index(s[idx]), idx.double(), rtol=0, atol=1e-9)
    mid = torch.sqrt(s[10] * s[11])  # geometric midpoint: index 10.5 by log-linear interpolation
    assert vp.ddpm_index(mid).item() == pytest.approx(10.5, abs=1e-9)
    assert vp.ddpm_index(torch.tensor([1e-6, 1e6])).tolist() == [0.0, 999.0]  # clamped


def test_ddpm_and_vp_sigmas():
    vp = VPSchedule("linear")
    full = ddpm_sigmas(1000, vp)
    torch.testing.assert_close(full[:-1], vp.discrete_sigmas().flip(0))
    assert full[-1] == 0
    s = ddpm_sigmas(10, vp, append_zero=False)
    torch.testing.assert_close(s, vp.discrete_sigmas()[[999, 888, 777, 666, 555, 444, 333, 222, 111, 0]])
    v = vp_sigmas(5, vp, t_min=0.2, t_max=1.0)
    torch.testing.assert_close(v[:-1], vp.sigma(torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=torch.float64)))


@pytest.mark.parametrize(
    "call",
    [
        lambda: karras_sigmas(0),
        lambda: karras_sigmas(10, sigma_min=0.0),
        lambda: karras_sigmas(10, sigma_min=5.0, sigma_max=1.0),
        lambda: karras_sigmas(10, rho=-1.0),
        lambda: loglinear_sigmas(2.5),
        lambda: loglinear_sigmas(10, sigma_max=float("inf")),
        lambda: VPSchedule("quadratic"),
        lambda: VPSchedule("linear", beta_min=1.0, beta_max=0.5),
        lambda: vp_sigmas(10, VPSchedule("cosine"), t_max=1.0),
        lambda: vp_sigmas(10, t_min=0.0),
        lambda: ddpm_sigmas(1001),
        lambda: VPSchedule().t(-1.0),
    ],
)
def test_bad_input(call):
    with pytest.raises(ValueError):
        call()
