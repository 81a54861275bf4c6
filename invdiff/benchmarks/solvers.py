"""`invdiff bench solvers`: accuracy and overhead of the unconditional solvers.

Three tables, all measured in the same run:

``solvers_gaussian``
    Error of each method (and of deepinv's Euler / Heun / DDIM solvers on the same EDM ODE, what
    a deepinv user would otherwise run) against the *exact* probability-flow map of Gaussian data
    ``N(mu, diag(s^2))`` in d = 8: ``x(lo) = mu + sqrt((s^2 + lo^2) / (s^2 + hi^2)) (x - mu)``,
    Karras sigmas from 80 to 0.002, N in {5, 10, 20, 50, 100} steps, float64.
``solvers_mixture``
    A 25-component mixture (means ``(8i, 8j)`` tiled over the dimension, unit covariances,
    random weights) in d = 8 and d = 80: RMSE of the end point against a fine reference (Heun,
    500 steps, 200 with ``--quick``; same starting noise) for the deterministic methods, and for
    every method the sliced Wasserstein distance to exact samples next to the exact-vs-exact distance at the
    same sample size (starting noise drawn from the exact noisy marginal at sigma_max).
``solvers_overhead``
    Wall time per step of each solver beyond the denoiser call (``sample`` with a denoiser that
    returns a cached tensor; best of several runs), as a ratio to one call of a network-sized denoiser (a 5-layer,
    64-channel conv net on 8 x 3 x 64 x 64 images), timed separately in the same run; deepinv's
    solvers on the same footing. Target: overhead < 5% of the denoiser time.
"""
from __future__ import annotations

import math
import time

import torch

from invdiff.diffusion.gmm import GaussianMixture
from invdiff.diffusion.schedules import karras_sigmas
from invdiff.diffusion.solvers import sample
from invdiff.metrics import sliced_wasserstein

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
METHODS = [
    ("euler", {}),
    ("heun", {}),
    ("ddim", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_3m", {}),
    ("dpmpp_3m", {"reference_3m": True}),
    ("unipc", {"order": 2}),
    ("unipc", {"order": 3}),
    ("ddpm", {}),
    ("euler_ancestral", {}),
]
STOCHASTIC = {"ddpm", "euler_ancestral"}


def _label(method: str, opts: dict) -> str:
    if opts.get("reference_3m"):
        return f"{method} (reference code)"
    return f"{method}-{opts['order']}" if "order" in opts else method


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# -- deepinv's solvers on the same ODE --------------------------------------------------------
def deepinv_solve(denoiser, x: torch.Tensor, sigmas: torch.Tensor, kind: str) -> torch.Tensor:
    """deepinv 0.5's EDM ODE with sigma(t) = t, s(t) = 1 (alpha = 0), solved by its own solvers.
    deepinv evaluates the denoiser in float32 (its documented behaviour), so its errors floor near 1e-7."""
    from deepinv.sampling import DDIMSolver, EDMDiffusionSDE, EulerSolver, HeunSolver

    solver = {"euler": EulerSolver, "heun": HeunSolver, "ddim": DDIMSolver}[kind](timesteps=sigmas)
    sde = EDMDiffusionSDE(
        sigma_t=lambda t: t,
        sigma_prime_t=lambda t: torch.ones_like(torch.as_tensor(t)),
        variance_exploding=True,
        alpha=0.0,
        denoiser=denoiser,
        minus_one_one=False,  # our denoisers work on the data's own range
        solver=solver,
        dtype=x.dtype,
        device=x.device,
    )
    return solver.sample(sde, x, timesteps=sigmas).sample


class DiagGaussian(torch.nn.Module):
    """Exact denoiser of N(mu, diag(s2)), with a float32-cast-tolerant signature (deepinv casts x)."""

    def __init__(self, mu: torch.Tensor, s2: torch.Tensor) -> None:
        super().__init__()
        self.mu, self.s2 = mu, s2

    def forward(self, x, sigma, *args, **kwargs):
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)
        mu, s2 = self.mu.to(x.dtype), self.s2.to(x.dtype)
        return mu + s2 / (s2 + sig**2) * (x - mu)


def gaussian_table(steps: list[int], device: str, n: int = 256, d: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    dt = torch.float64
    mu = torch.randn(d, generator=g, dtype=dt).to(device)
    s2 = torch.logspace(-2, 1, d, dtype=dt).to(device)  # variances 0.01 .. 10
    D = DiagGaussian(mu, s2)
    x = (mu + SIGMA_MAX * torch.randn(n, d, generator=g, dtype=dt).to(device)).contiguous()
    exact = mu + torch.sqrt((s2 + SIGMA_MIN**2) / (s2 + SIGMA_MAX**2)) * (x - mu)
    scale = (exact - mu).pow(2).mean().sqrt().item()
    rows = []
    for N in steps:
        sigmas = karras_sigmas(N + 1, SIGMA_MIN, SIGMA_MAX, append_zero=False, device=device)  # N steps
        for method, opts in METHODS:
            if method in STOCHASTIC:
                continue
            out = sample(D, x, sigmas, method, **opts)
            err = (out.x - exact).pow(2).mean().sqrt().item()
            rows.append({"library": "invdiff", "method": _label(method, opts), "steps": N, "nfe": out.nfe, "rel_rmse": err / scale})
        for kind in ("euler", "heun", "ddim"):
            try:
                xd = deepinv_solve(D, x, sigmas, kind)
                err = (xd - exact).pow(2).mean().sqrt().item() / scale
            except Exception as e:  # an API change in deepinv must not kill the benchmark
                err = float("nan")
                print(f"deepinv {kind}: {type(e).__name__}: {e}")
            nfe = 2 * N if kind == "heun" else N
            rows.append({"library": "deepinv", "method": kind, "steps": N, "nfe": nfe, "rel_rmse": err})
    return rows


# -- 25-component mixture ---------------------------------------------------------------------
def grid_mixture(d: int, device: str, dtype=torch.float64, seed: int = 0) -> GaussianMixture:
    """25 components with means (8i, 8j), i, j = 0..4, tiled over the d coordinates, unit
    covariances, weights uniform(0.5, 1.5) normalised."""
    if d % 2:
        raise ValueError(f"d: expected an even dimension, got {d}")
    g = torch.Generator().manual_seed(seed)
    ij = torch.cartesian_prod(torch.arange(5), torch.arange(5)).to(dtype) * 8.0  # (25, 2)
    means = ij.repeat(1, d // 2)
    w = 0.5 + torch.rand(25, generator=g, dtype=dtype)
    return GaussianMixture((w / w.sum()).to(device), means.to(device), torch.ones(25, dtype=dtype, device=device))


def mixture_table(steps: list[int], dims: list[int], n: int, ref_steps: int, n_proj: int, device: str) -> list[dict]:
    rows = []
    for d in dims:
        prior = grid_mixture(d, device)
        g = torch.Generator().manual_seed(1)
        exact = prior.sample(n, generator=g)
        exact2 = prior.sample(n, generator=g)
        x = (prior.sample(n, generator=g) + SIGMA_MAX * torch.randn(n, d, generator=g, dtype=exact.dtype).to(device))
        sw = lambda a: sliced_wasserstein(a, exact, n_projections=n_proj, generator=torch.Generator().manual_seed(0)).item()
        sw_exact = sw(exact2)
        sigmas_ref = karras_sigmas(ref_steps, SIGMA_MIN, SIGMA_MAX, device=device)
        ref = sample(prior, x, sigmas_ref, "heun").x
        scale = ref.pow(2).mean().sqrt().item()
        rows.append({"d": d, "method": f"reference heun", "steps": ref_steps, "nfe": 2 * ref_steps - 1, "rel_rmse_vs_ref": 0.0,
                     "sw_to_exact": sw(ref), "sw_exact_vs_exact": sw_exact})
        for N in steps:
            sigmas = karras_sigmas(N, SIGMA_MIN, SIGMA_MAX, device=device)  # N steps, the last to 0
            for method, opts in METHODS:
                out = sample(prior, x, sigmas, method, generator=torch.Generator().manual_seed(2), **opts)
                err = float("nan") if method in STOCHASTIC else (out.x - ref).pow(2).mean().sqrt().item() / scale
                rows.append({"d": d, "method": _label(method, opts), "steps": N, "nfe": out.nfe, "rel_rmse_vs_ref": err,
                             "sw_to_exact": sw(out.x), "sw_exact_vs_exact": sw_exact})
    return rows


# -- overhead ---------------------------------------------------------------------------------
def conv_net(channels: int = 64, depth: int = 5) -> torch.nn.Module:
    layers = [torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.SiLU()]
    for _ in range(depth - 2):
        layers += [torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.SiLU()]
    layers += [torch.nn.Conv2d(channels, 3, 3, padding=1)]
    return torch.nn.Sequential(*layers)


class _NetDenoiser(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, sigma, *args, **kwargs):
        return x - self.net(x)


class _Cached(torch.nn.Module):
    """Returns a precomputed tensor: timing ``sample`` with it measures everything but the network."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, sigma, *args, **kwargs):
        return self.out


def _best_time(fn, device: str, repeats: int) -> float:
    """Best of ``repeats`` wall times (timeit's estimator: least disturbed by other load)."""
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def overhead_table(n_steps: int, repeats: int, device: str) -> list[dict]:
    torch.manual_seed(0)
    den = _NetDenoiser(conv_net()).to(device).eval()
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    sig = torch.full((8,), 1.0, device=device)
    with torch.no_grad():
        for _ in range(2):
            den(x, sig)  # warm-up
        t_den = _best_time(lambda: den(x, sig), device, max(repeats, 5))
        cached = _Cached(den(x, sig))
    sigmas = karras_sigmas(n_steps, SIGMA_MIN, SIGMA_MAX, append_zero=False, device=device)
    rows = []
    for method, opts in METHODS:
        s = sample(cached, x, sigmas, method, generator=torch.Generator().manual_seed(0), **opts)  # warm-up
        calls = s.nfe
        t = _best_time(lambda: sample(cached, x, sigmas, method, generator=torch.Generator().manual_seed(0), **opts), device, repeats)
        per_step = t / (n_steps - 1)
        rows.append({"library": "invdiff", "method": _label(method, opts), "denoiser_ms": 1e3 * t_den,
                     "overhead_ms_per_step": 1e3 * per_step, "nfe_per_step": calls / (n_steps - 1),
                     "overhead_pct_of_denoiser": 100 * per_step / t_den})
    for kind in ("euler", "heun", "ddim"):
        try:
            with torch.no_grad():
                deepinv_solve(cached, x, sigmas, kind)
                t = _best_time(lambda: deepinv_solve(cached, x, sigmas, kind), device, repeats)
        except Exception as e:
            print(f"deepinv {kind}: {type(e).__name__}: {e}")
            t = float("nan")
        per_step = t / (n_steps - 1)
        rows.append({"library": "deepinv", "method": kind, "denoiser_ms": 1e3 * t_den, "overhead_ms_per_step": 1e3 * per_step,
                     "nfe_per_step": 2.0 if kind == "heun" else 1.0, "overhead_pct_of_denoiser": 100 * per_step / t_den})
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """Run the three tables (see the module docstring); ``quick`` shrinks sizes for a smoke run."""
    steps = [5, 10, 20] if quick else [5, 10, 20, 50, 100]
    with torch.no_grad():
        tables = {"solvers_gaussian": gaussian_table(steps, device)}
        tables["solvers_mixture"] = mixture_table(
            steps,
            dims=[8, 80],
            n=256 if quick else 512,
            ref_steps=200 if quick else 500,
            n_proj=128 if quick else 256,
            device=device,
        )
    tables["solvers_overhead"] = overhead_table(n_steps=11 if quick else 51, repeats=3 if quick else 5, device=device)
    return tables
