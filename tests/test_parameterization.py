"""The parameterisation wrapper against an exact Gaussian-mixture denoiser.

For each prediction type, input scaling and time variable, a fake "network" is built from the
exact posterior mean with the textbook definitions (eps = (x - x0)/sigma, v = alpha eps -
sigma_vp x0, score = grad log p of the network's own input), and its own inverse of the time
map; the wrapper must give back the exact ``D(x, sigma)``.
"""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.diffusion.gmm import Gaussian, GaussianMixture
from invdiff.diffusion.parameterization import wrap
from invdiff.diffusion.schedules import VPSchedule, karras_sigmas
from invdiff.diffusion.solvers import sample

torch.set_default_dtype(torch.float32)


def _mixture():
    means = torch.tensor([[-2.0, 0.5, 0.0], [1.5, -1.0, 2.0]], dtype=torch.float64)
    covs = torch.tensor([[0.3, 0.5, 0.2], [0.8, 0.1, 0.4]], dtype=torch.float64)  # diagonal
    return GaussianMixture(torch.tensor([0.4, 0.6], dtype=torch.float64), means, covs)


def _sigma_from_time(time: str, t: torch.Tensor, schedule: VPSchedule) -> torch.Tensor:
    """Each time variable's inverse, written independently of the wrapper."""
    if time == "sigma":
        return t
    if time == "log_sigma":
        return torch.exp(4 * t)  # EDM c_noise = ln(sigma) / 4
    if time == "t":
        abar = torch.exp(schedule.log_alpha_bar(t))
        return torch.sqrt((1 - abar) / abar)
    # fractional DDPM index: log-linear interpolation between the discrete levels
    log_s = schedule.discrete_sigmas().log()
    lo = t.floor().long().clamp(0, schedule.T - 2)
    w = t - lo
    return torch.exp((1 - w) * log_s[lo] + w * log_s[lo + 1])


def _fake_net(prior, prediction, scaling, time, schedule):
    def net(x_in, t):
        assert t.shape == (x_in.shape[0],)
        sigma = _sigma_from_time(time, t, schedule)[:, None]
        alpha = 1 / torch.sqrt(1 + sigma**2)  # VP scaling of the VE-equivalent sigma
        x = x_in / alpha if scaling == "vp" else x_in
        x0 = prior(x, sigma[:, 0])
        eps = (x - x0) / sigma
        if prediction == "x0":
            return x0
        if prediction == "eps":
            return eps
        if prediction == "v":  # Salimans & Ho 2022 in VP variables: alpha_vp = alpha, sigma_vp = alpha sigma
            return alpha * eps - alpha * sigma * x0
        score_x = (x0 - x) / sigma**2  # Tweedie, grad_x log p_sigma(x)
        return score_x if scaling == "ve" else score_x / alpha  # p_vp(x_vp) = p(x_vp / alpha) / alpha^d

    return net


@pytest.mark.parametrize("time", ["sigma", "log_sigma", "t", "ddpm"])
@pytest.mark.parametrize("scaling", ["ve", "vp"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_wrap_recovers_the_exact_denoiser(prediction, scaling, time):
    prior, schedule = _mixture(), VPSchedule("cosine" if time == "t" else "linear")
    D = wrap(_fake_net(prior, prediction, scaling, time, schedule), prediction, scaling, time, schedule)
    g = torch.Generator().manual_seed(1)
    if time == "ddpm":  # noise levels the discrete schedule can represent: [0.01, 157]
        sigma = torch.tensor([0.02, 0.3, 1.0, 4.0, 40.0], dtype=torch.float64)
    else:
        sigma = torch.tensor([0.01, 0.3, 1.0, 4.0, 80.0], dtype=torch.float64)
    x = prior.sample(5, generator=g) + sigma[:, None] * torch.randn(5, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(D(x, sigma), prior(x, sigma), rtol=1e-9, atol=1e-9 * float(sigma.max()))
    torch.testing.assert_close(D(x[:1], 0.7), prior(x[:1], 0.7), rtol=1e-9, atol=1e-9)  # a float sigma


def test_wrap_registers_the_network():
    W = wrap(_Net(), "eps", "vp", "t")
    assert isinstance(W, torch.nn.Module) and len(list(W.parameters())) == 2  # .to(), .eval() reach it
    assert "prediction='eps'" in repr(W) and "scaling='vp'" in repr(W)
    assert W(torch.zeros(2, 3), 1.0).dtype == torch.float32


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, x, t):
        return self.lin(x) * t[:, None]


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"prediction": "noise"}, ValueError),
        ({"scaling": "edm"}, ValueError),
        ({"time": "step"}, ValueError),
        ({"schedule": "linear"}, TypeError),
    ],
)
def test_wrap_bad_options(kwargs, err):
    with pytest.raises(err):
        wrap(lambda x, t: x, **kwargs)


def test_wrap_bad_calls():
    with pytest.raises(TypeError):
        wrap("not a network")
    D = wrap(lambda x, t: x[:, :2], "x0")
    with pytest.raises(ValueError, match="expected shape"):
        D(torch.zeros(2, 3), 1.0)
    D = wrap(lambda x, t: x, "eps")
    with pytest.raises(ValueError, match="sigma"):
        D(torch.zeros(2, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="sigma"):
        D(torch.zeros(2, 3), torch.ones(3))


def test_deepinv_denoiser_is_a_prior_without_wrapper():
    """A deepinv ``Denoiser`` subclass (exact Gaussian posterior mean on images) runs in ``sample``
    unwrapped, and the ODE solution matches the exact Gaussian flow
    x(lo) = mu + sqrt((s^2 + lo^2) / (s^2 + hi^2)) (x - mu)."""
    dinv = pytest.importorskip("deepinv")
    mu, s2 = 0.3, 0.5**2

    class GaussianImageDenoiser(dinv.models.Denoiser):
        def forward(self, x, sigma, **kwargs):
            sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
            return mu + s2 / (s2 + sigma**2) * (x - mu)

    den = GaussianImageDenoiser()
    sigmas = karras_sigmas(100, 0.05, 20.0, append_zero=False, dtype=torch.float64)
    x = mu + 20.0 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(den, x, sigmas, method="heun")
    exact = mu + math.sqrt((s2 + 0.05**2) / (s2 + 20.0**2)) * (x - mu)
    assert out.nfe == 2 * 99
    torch.testing.assert_close(out.x, exact, rtol=0, atol=2e-3)  # heun error: 5.5e-3 at 40 steps, order 2


def test_deepinv_drunet_runs_unwrapped():
    """deepinv's DRUNet (random weights, pretrained=None) takes the (B,) sigma tensor ``sample`` passes."""
    dinv = pytest.importorskip("deepinv")
    torch.manual_seed(0)
    net = dinv.models.DRUNet(in_channels=1, out_channels=1, nc=[8, 8, 8, 8], pretrained=None)
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = sample(net, x, karras_sigmas(3, 0.05, 1.0), method="dpmpp_2m")
    assert out.x.shape == x.shape and bool(torch.isfinite(out.x).all()) and out.nfe == 3


def test_gaussian_is_a_prior_for_wrapped_vp_eps_network():
    """End to end: a DDPM-style eps network (VP input, DDPM index) of an exact Gaussian, wrapped and
    solved on DDPM noise levels, follows the same trajectory as the exact prior itself, and lands
    near the exact flow map (100 large steps in lambda at low noise: solver error ~3e-3)."""
    prior, schedule = Gaussian(torch.zeros(2, dtype=torch.float64), 0.25), VPSchedule("linear")
    D = wrap(_fake_net(prior, "eps", "vp", "ddpm", schedule), "eps", "vp", "ddpm", schedule)
    sig = schedule.discrete_sigmas().flip(0)[::10].contiguous()  # 100 levels from 157 to ~0.02
    x = sig[0] * torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample(D, x, sig, method="unipc", order=3)
    torch.testing.assert_close(out.x, sample(prior, x, sig, method="unipc", order=3).x, rtol=1e-9, atol=1e-9)
    lo, hi = float(sig[-1]), float(sig[0])
    torch.testing.assert_close(out.x, math.sqrt((0.25 + lo**2) / (0.25 + hi**2)) * x, rtol=0, atol=1e-2)
