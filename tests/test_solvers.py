"""Unconditional solvers against exact references.

1. Convergence orders against the exact probability-flow map of Gaussian data N(mu, s^2 I):
   x(lo) = mu + sqrt((s^2 + lo^2) / (s^2 + hi^2)) (x(hi) - mu).
2. Algebraic identities between methods (DDIM = Euler = first-order DPM-Solver++ = UniP-1 in VE
   variables; DDPM = DDIM(eta=1) = Euler ancestral), in float64.
3. Sample quality on a 2D Gaussian mixture against its exact samples (mode weights, sliced
   Wasserstein), with statistical tolerances from the sample size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invdiff.diffusion.gmm import GaussianMixture
from invdiff.diffusion.schedules import karras_sigmas
from invdiff.diffusion.solvers import METHODS, DPMSolverPP, UniPC, make_solver, sample
from invdiff.metrics import sliced_wasserstein

MU, S2 = 0.5, 0.3**2
SIGMA_MAX, SIGMA_MIN = 80.0, 0.002
NS = [10, 20, 40, 80, 160]


def gaussian_D(x, sigma):
    """Exact denoiser of N(MU, S2 I): D = MU + S2 / (S2 + sigma^2) (x - MU)."""
    return MU + S2 / (S2 + sigma[:, None] ** 2) * (x - MU)


def exact_flow(x, hi, lo):
    return MU + math.sqrt((S2 + lo**2) / (S2 + hi**2)) * (x - MU)


def _x_start(n=16, d=4):
    return MU + SIGMA_MAX * torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


# (method, options, expected order). UniPC-p with its corrector has order p + 1 (Zhao et al. 2023,
# Theorem 3.1); without the corrector UniP-p has order p. lower_order_final is switched off so
# that N = 10 (< 15 steps) measures the nominal order too.
ORDER_CASES = [
    ("euler", {}, 1),
    ("ddim", {}, 1),
    ("heun", {}, 2),
    ("dpmpp_2m", {"lower_order_final": False}, 2),
    ("dpmpp_3m", {"lower_order_final": False}, 3),
    ("unipc", {"order": 2, "corrector": False, "lower_order_final": False}, 2),
    ("unipc", {"order": 3, "corrector": False, "lower_order_final": False}, 3),
    ("unipc", {"order": 1, "lower_order_final": False}, 2),
    ("unipc", {"order": 2, "lower_order_final": False}, 3),
    ("unipc", {"order": 3, "lower_order_final": False}, 4),
]


@pytest.mark.parametrize("method, opts, order", ORDER_CASES, ids=[f"{m}-{o}" for m, o, _ in ORDER_CASES])
def test_convergence_order_on_exact_gaussian_flow(method, opts, order):
    x = _x_start()
    exact = exact_flow(x, SIGMA_MAX, SIGMA_MIN)
    errs = []
    for n in NS:
        sigmas = karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)  # n steps, sigma_min > 0
        out = sample(gaussian_D, x, sigmas, method=method, **opts)
        errs.append((out.x - exact).abs().max().item())
    slope = -np.polyfit(np.log(NS), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.3, f"{method} {opts}: fitted order {slope:.2f}, errors {errs}"


def test_reference_code_3m_is_second_order():
    """The 3M update of diffusers / k-diffusion (``- phi_3 D_2``, ``reference_3m=True``) drops to
    order 2 once asymptotic (N = 40..160), where ours (``- 2 phi_3 D_2``) keeps order 3."""
    x = _x_start()
    exact = exact_flow(x, SIGMA_MAX, SIGMA_MIN)
    ns = [40, 80, 160]
    slopes = []
    for ref in (True, False):
        errs = []
        for n in ns:
            sigmas = karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False)
            out = sample(gaussian_D, x, sigmas, "dpmpp_3m", lower_order_final=False, reference_3m=ref)
            errs.append((out.x - exact).abs().max().item())
        slopes.append(-np.polyfit(np.log(ns), np.log(errs), 1)[0])
    assert slopes[0] < 2.3 and abs(slopes[1] - 3) < 0.3, slopes


def test_default_lower_order_final_still_converges():
    """With the defaults (lower_order_final for < 15 steps) the errors still fall monotonically."""
    x = _x_start()
    exact = exact_flow(x, SIGMA_MAX, SIGMA_MIN)
    for method in ("dpmpp_2m", "dpmpp_3m", "unipc"):
        errs = [
            (sample(gaussian_D, x, karras_sigmas(n + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False), method).x - exact)
            .abs()
            .max()
            .item()
            for n in (5, 10, 20)
        ]
        assert errs[0] > errs[1] > errs[2], (method, errs)


def test_first_order_methods_agree():
    """In VE variables DDIM(eta=0), Euler, DPM-Solver++(1) and UniP-1 are the same update
    x' = x0_hat + (sigma'/sigma)(x - x0_hat)."""
    x = _x_start()
    sigmas = karras_sigmas(25, 0.01, SIGMA_MAX)
    ref = sample(gaussian_D, x, sigmas, "ddim").x
    for method, opts in [("euler", {}), ("dpmpp_2m", {"order": 1}), ("unipc", {"order": 1, "corrector": False})]:
        torch.testing.assert_close(sample(gaussian_D, x, sigmas, method, **opts).x, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(sample(gaussian_D, x, sigmas, "ddim").x, ref, rtol=0, atol=0)  # deterministic


def test_dpmpp_order1_step_is_ddim_step():
    """A single step of DPMSolverPP(order=1) vs the DDIM update of Song et al. written in VP
    variables: x_vp' = sqrt(abar') x0 + sqrt(1 - abar') eps_hat, then back to VE."""
    g = torch.Generator().manual_seed(3)
    x, x0 = torch.randn(5, 3, generator=g, dtype=torch.float64) * 2.0, torch.randn(5, 3, generator=g, dtype=torch.float64)
    s, s_next = 2.0, 0.7
    abar, abar_next = 1 / (1 + s**2), 1 / (1 + s_next**2)
    x_vp = math.sqrt(abar) * x
    eps = (x_vp - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    ddim_vp = math.sqrt(abar_next) * x0 + math.sqrt(1 - abar_next) * eps
    out = DPMSolverPP([s, s_next], order=1).step(0, x, x0)
    torch.testing.assert_close(out, ddim_vp / math.sqrt(abar_next), rtol=1e-12, atol=1e-12)


def test_ancestral_identities_with_same_noise():
    """DDPM's exact Gaussian transition = DDIM(eta=1) = Euler ancestral, draw for draw."""
    x = _x_start()
    sigmas = karras_sigmas(30, 0.01, SIGMA_MAX)
    outs = [
        sample(gaussian_D, x, sigmas, m, generator=torch.Generator().manual_seed(7), **o).x
        for m, o in [("ddpm", {}), ("ddim", {"eta": 1.0}), ("euler_ancestral", {})]
    ]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-10, atol=1e-10)


def test_ddpm_step_moments():
    """One DDPM step from a fixed x: mean x0 + r^2 (x - x0), variance sigma'^2 (1 - r^2)
    (z-bounds for n = 20000 draws: 5 standard errors)."""
    n, s, s_next = 20000, 1.0, 0.6
    x, x0 = torch.full((n, 1), 2.0, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64)
    out = make_solver("ddpm", [s, s_next]).step(0, x, x0, generator=torch.Generator().manual_seed(0))
    r2, var = (s_next / s) ** 2, s_next**2 * (1 - (s_next / s) ** 2)
    assert abs(out.mean().item() - 2.0 * r2) < 5 * math.sqrt(var / n)
    assert abs(out.var().item() - var) < 5 * var * math.sqrt(2 / n)


def test_euler_heun_ddim_match_deepinv():
    """An independent implementation: deepinv 0.5's Euler / Heun / DDIM solvers on its EDM ODE
    (sigma(t) = t, s(t) = 1, alpha = 0). deepinv evaluates the denoiser in float32, hence 1e-5."""
    pytest.importorskip("deepinv")
    from invdiff.benchmarks.solvers import DiagGaussian, deepinv_solve

    D = DiagGaussian(torch.full((3,), MU, dtype=torch.float64), torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64))
    x = MU + 20.0 * torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = karras_sigmas(12, 0.01, 20.0, append_zero=False)
    for kind in ("euler", "heun", "ddim"):
        ours = sample(D, x, sigmas, kind).x
        torch.testing.assert_close(deepinv_solve(D, x, sigmas, kind), ours, rtol=1e-5, atol=1e-5)


# --- 2D Gaussian mixture --------------------------------------------------------------------
# Default run: the ancestral samplers and one solver of each family; the rest are marked slow
# (each case costs 200-400 exact-mixture evaluations of 1000 points).
MIXTURE_CASES = [
    ("ddpm", {}),
    ("euler_ancestral", {}),
    ("heun", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_3m", {}),
    ("unipc", {}),
    pytest.param("euler", {}, marks=pytest.mark.slow),
    pytest.param("ddim", {}, marks=pytest.mark.slow),
    pytest.param("ddim", {"eta": 0.5}, marks=pytest.mark.slow),
    pytest.param("unipc", {"order": 3}, marks=pytest.mark.slow),
]
N_MIX = 1000


def _mode_of(prior, x):
    return torch.cdist(x, prior.means).argmin(dim=1)


def _sw_at_true_weights(prior, a, b):
    """Sliced Wasserstein between a and b after reweighting each set to the exact mode weights
    (importance weights w_k / n_k per sample of mode k). The mode weights, a 2-dof quantity that
    otherwise dominates SW with a wide spread, are tested separately by the z-scores; what is
    left measures the shape and placement of every mode. Same 200 directions for every call."""
    wa = prior.weights / torch.bincount(_mode_of(prior, a), minlength=3).double()
    wb = prior.weights / torch.bincount(_mode_of(prior, b), minlength=3).double()
    return sliced_wasserstein(
        a, b, n_projections=200, generator=torch.Generator().manual_seed(0),
        weights_a=wa[_mode_of(prior, a)], weights_b=wb[_mode_of(prior, b)],
    ).item()


@pytest.fixture(scope="module")
def mixture():
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    means = torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    covs = torch.tensor([[[0.5, 0.2], [0.2, 0.3]], [[0.3, 0.0], [0.0, 0.6]], [[0.4, -0.1], [-0.1, 0.4]]], dtype=torch.float64)
    prior = GaussianMixture(w, means, covs)
    exact = prior.sample(N_MIX, generator=torch.Generator().manual_seed(100))
    exact2 = prior.sample(N_MIX, generator=torch.Generator().manual_seed(101))
    return prior, exact, _sw_at_true_weights(prior, exact, exact2)


def _start(prior):
    """Starting points from the exact noisy marginal p_{sigma_max} = prior * N(0, sigma_max^2 I).
    (Starting from N(0, sigma_max^2 I) instead shifts the mode weights of the deterministic
    methods by ~1%, an error of the initialisation, not of the solver.)"""
    g = torch.Generator().manual_seed(2)
    return prior.sample(N_MIX, generator=g) + SIGMA_MAX * torch.randn(N_MIX, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("method, opts", MIXTURE_CASES)
def test_samples_match_exact_mixture(mixture, method, opts):
    prior, exact, baseline = mixture
    out = sample(prior, _start(prior), karras_sigmas(200, SIGMA_MIN, SIGMA_MAX), method=method,
                 generator=torch.Generator().manual_seed(3), **opts)
    # mode weights: nearest mean (modes >= 6.4 apart, std <= 0.8: misassignment < 1e-4); the count
    # of mode k is Binomial(n, w_k) for an exact sampler, |z| < 4 (two-sided 6e-5 per mode and method)
    k = _mode_of(prior, out.x)
    for j, w in enumerate(prior.weights.tolist()):
        z = (int((k == j).sum()) - N_MIX * w) / math.sqrt(N_MIX * w * (1 - w))
        assert abs(z) < 4, f"{method}: mode {j} z-score {z:.2f}"
    # SW to exact samples within 1.5x the SW between the two exact sets (the same seeds 100, 101).
    # Calibration: for 100 further exact sets in place of out.x the ratio had mean 0.85, sd 0.08,
    # max 1.11, so 1.5 is ~8 sd beyond what an exact sampler gives.
    sw = _sw_at_true_weights(prior, out.x, exact)
    assert sw < 1.5 * baseline, f"{method}: SW {sw:.4f} vs exact-exact {baseline:.4f}"


def test_mixture_check_has_power(mixture):
    """A wrong sampler fails it: stopping at sigma = 0.6 leaves every mode too wide (variance + 0.36)."""
    prior, exact, baseline = mixture
    out = sample(prior, _start(prior), karras_sigmas(30, 0.6, SIGMA_MAX, append_zero=False), method="dpmpp_2m")
    assert _sw_at_true_weights(prior, out.x, exact) > 1.5 * baseline


# --- API -----------------------------------------------------------------------------------
def test_nfe_and_flags():
    sigmas = karras_sigmas(10, 0.01, 10.0)  # 10 steps, the last to 0
    x = torch.randn(3, 2, dtype=torch.float64)
    assert sample(gaussian_D, x, sigmas, "heun").nfe == 2 * 10 - 1  # last step to 0 is Euler
    for m in METHODS:
        if m != "heun":
            assert sample(gaussian_D, x, sigmas, m).nfe == 10
    assert {m for m in METHODS if make_solver(m, sigmas).stochastic} == {"ddpm", "euler_ancestral"}
    assert make_solver("ddim", sigmas, eta=0.3).stochastic
    assert make_solver("heun", sigmas).nfe_per_step == 2


def test_step_to_zero_returns_x0_hat():
    x, x0 = torch.randn(4, 3), torch.randn(4, 3)
    for m in METHODS:
        if m == "heun":
            continue
        torch.testing.assert_close(make_solver(m, [1.0, 0.0]).step(0, x, x0), x0, rtol=1e-6, atol=1e-6)


def test_generator_reproducible_and_dtype_follows_x():
    sigmas = karras_sigmas(8, 0.01, 10.0)
    x = torch.randn(3, 2)
    a = sample(gaussian_D, x, sigmas, "ddpm", generator=torch.Generator().manual_seed(5)).x
    b = sample(gaussian_D, x, sigmas, "ddpm", generator=torch.Generator().manual_seed(5)).x
    c = sample(gaussian_D, x, sigmas, "ddpm", generator=torch.Generator().manual_seed(6)).x
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32


def test_callback_and_step_api_match_sample():
    sigmas = karras_sigmas(12, 0.01, 10.0)
    x = 10.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    ref = sample(gaussian_D, x, sigmas, "unipc", order=3, callback=lambda d: seen.append(d["i"])).x
    solver, y = make_solver("unipc", sigmas, order=3), x
    for i in range(solver.n_steps):  # the loop a posterior sampler writes
        y = solver.step(i, y, gaussian_D(y, torch.full((3,), solver.sigmas[i], dtype=torch.float64)))
    assert seen == list(range(12))
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    # reuse for a new trajectory: i = 0 resets the history
    y2 = x
    for i in range(solver.n_steps):
        y2 = solver.step(i, y2, gaussian_D(y2, torch.full((3,), solver.sigmas[i], dtype=torch.float64)))
    torch.testing.assert_close(y2, ref, rtol=0, atol=0)


def test_unipc_corrector_keeps_changes_between_steps():
    """A shift added to x between steps (guidance) survives the corrector: the corrector is the
    increment x^c - x_pred, which does not depend on the shift."""
    sigmas = karras_sigmas(6, 0.1, 10.0)
    x = 10.0 * torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0_1 = torch.zeros(2, 2, dtype=torch.float64)
    outs = []
    for shift in (0.0, 1.0):
        s = UniPC(sigmas, order=2)
        x1 = s.step(0, x, torch.zeros_like(x)) + shift
        outs.append(s.step(1, x1, x0_1) - shift * (s.sigmas[2] / s.sigmas[1]))
    # linear in x with coefficient sigma_2 / sigma_1 (D does not depend on x here)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "sigmas",
    [[1.0], [1.0, 2.0], [1.0, 1.0, 0.0], [1.0, -0.5], [float("nan"), 0.0], [[2.0, 1.0]], [float("inf"), 1.0]],
)
def test_bad_sigmas(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        sample(gaussian_D, torch.zeros(2, 2), torch.tensor(sigmas, dtype=torch.float64), "euler")


def test_bad_input():
    sig = karras_sigmas(4, 0.1, 1.0)
    with pytest.raises(ValueError, match="finite"):
        sample(gaussian_D, torch.tensor([[0.0, float("nan")]]), sig)
    with pytest.raises(TypeError):
        sample(gaussian_D, torch.zeros(2, 2, dtype=torch.long), sig)
    with pytest.raises(ValueError, match="shape"):
        sample(lambda x, s: x[:, :1], torch.zeros(2, 2), sig)
    with pytest.raises(ValueError, match="method"):
        sample(gaussian_D, torch.zeros(2, 2), sig, "rk45")
    with pytest.raises(TypeError, match="accepted"):
        make_solver("dpmpp_2m", sig, eta=0.5)
    with pytest.raises(ValueError, match="order"):
        make_solver("unipc", sig, order=4)
    with pytest.raises(ValueError, match="eta"):
        make_solver("ddim", sig, eta=-1.0)
    solver = make_solver("heun", sig)
    with pytest.raises(ValueError, match="denoise"):
        solver.step(0, torch.ones(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="x0_hat"):
        solver.step(0, torch.ones(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="step index"):
        solver.step(4, torch.ones(2, 2), torch.zeros(2, 2))
    ms = make_solver("dpmpp_3m", sig)
    ms.step(0, torch.ones(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="in order"):
        ms.step(2, torch.ones(2, 2), torch.zeros(2, 2))
