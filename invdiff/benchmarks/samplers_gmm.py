"""The Gaussian-mixture posterior benchmark of MCGdiff (Cardoso et al. 2023), with its exact posterior.

Prior: 25 components with unit covariance and means on the grid ``(8i, 8j)``, ``i, j in
{-2..2}``, tiled over ``d_x`` coordinates (``(8i, 8j, 8i, 8j, ...)``), random weights. Operator
``A = U diag(s) V^T`` (``d_y x d_x``) with Haar-orthogonal ``U``, ``V`` and sorted uniform
``s`` (:func:`invdiff.operators.matrix.make_matrix`), noise ``sigma_y = u max(s)``, ``u`` uniform.
The posterior is again a 25-component mixture (:meth:`GaussianMixture.posterior`), so samplers
are scored against exact draws:

- ``sw``: sliced Wasserstein distance (:func:`invdiff.metrics.sliced_wasserstein`, importance
  weights included) between the sampler's draws and as many exact posterior draws, with
  ``sw_floor`` the distance between two exact sets of the same size;
- ``mode_tv``: total variation :math:`\\tfrac12 \\sum_k |\\hat p_k - w'_k|` between the
  (weighted) fraction of draws assigned to each posterior component and the exact posterior
  weights :math:`w'_k`, with ``mode_tv_floor`` that of exact draws;
- :func:`credible_coverage`: fraction of true coordinates inside central credible intervals.

:func:`gmm_table` runs the SMC ensemble (N particles, several independent ensembles so that
every sampler yields the same number of draws), twisted SMC, and, when present, invdiff's DPS
and RED-Diff at the same number of denoiser evaluations per draw (NFE).

>>> p = mcgdiff_problem(8, 1, seed=0)
>>> p["prior"].n_components, tuple(p["y"].shape), p["posterior"].n_components
(25, (1, 1), 25)
"""
from __future__ import annotations

import itertools
import math
import time

import torch

from invdiff.diffusion.gmm import GaussianMixture
from invdiff.metrics import sliced_wasserstein

__all__ = ["mcgdiff_prior", "mcgdiff_problem", "mode_tv", "score_samples", "credible_coverage",
           "weighted_quantile", "gmm_table", "calibration_table"]


def mcgdiff_prior(d_x: int, generator: torch.Generator | None = None, dtype=torch.float64, device="cpu") -> GaussianMixture:
    """The 25-component MCGdiff mixture in dimension ``d_x`` (even), random weights, unit covariances."""
    if d_x < 2 or d_x % 2:
        raise ValueError(f"d_x: expected an even dimension >= 2, got {d_x}")
    grid = torch.tensor([(8.0 * i, 8.0 * j) for i in range(-2, 3) for j in range(-2, 3)], dtype=dtype)
    means = grid.repeat(1, d_x // 2)  # (25, d_x): (8i, 8j, 8i, 8j, ...)
    weights = torch.rand(25, generator=generator, dtype=dtype)
    return GaussianMixture(weights.to(device), means.to(device), torch.ones(25, dtype=dtype, device=device))


def mcgdiff_problem(d_x: int, d_y: int, seed: int = 0, dtype=torch.float64, device="cpu") -> dict:
    """One random instance: ``prior``, ``physics`` (a :class:`~invdiff.operators.Matrix` with its
    noise), ``y`` (1, d_y), ``sigma_y``, ``x_true`` (1, d_x) and the exact ``posterior``."""
    from invdiff.operators.matrix import make_matrix

    g = torch.Generator().manual_seed(seed)
    prior = mcgdiff_prior(d_x, g, dtype, device)
    physics = make_matrix(m=d_y, n=d_x, kind="svd", seed=seed + 10_000, dtype=dtype, device=device)
    sigma_y = float(torch.rand((), generator=g, dtype=torch.float64)) * float(physics.s.max())
    physics = make_matrix(m=d_y, n=d_x, kind="svd", seed=seed + 10_000, sigma=sigma_y, dtype=dtype, device=device)
    x_true = prior.sample(1, generator=g)
    y = physics.A(x_true) + sigma_y * torch.randn(1, d_y, generator=g, dtype=dtype).to(device)
    posterior = prior.posterior(physics.matrix, y[0], sigma_y)
    return {"prior": prior, "physics": physics, "y": y, "sigma_y": sigma_y, "x_true": x_true,
            "posterior": posterior, "d_x": d_x, "d_y": d_y, "seed": seed}


def mode_tv(posterior: GaussianMixture, samples: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """TV distance between the exact posterior mode weights and the (weighted) share of ``samples``
    (n, d) whose most likely posterior component is each mode."""
    samples = samples.to(posterior.means_flat.dtype)
    k = posterior.responsibilities(samples, 1e-6).argmax(1)
    w = torch.full((samples.shape[0],), 1.0 / samples.shape[0], dtype=samples.dtype, device=samples.device) \
        if weights is None else (weights / weights.sum()).to(samples.dtype)
    share = torch.zeros(posterior.n_components, dtype=samples.dtype, device=samples.device).index_add_(0, k, w)
    return 0.5 * float((share - posterior.weights).abs().sum())


def score_samples(posterior: GaussianMixture, samples: torch.Tensor, weights: torch.Tensor | None = None,
                  seed: int = 0, n_projections: int = 256) -> dict:
    """``sw``, ``sw_floor``, ``mode_tv``, ``mode_tv_floor`` of (weighted) draws (n, d) against exact ones."""
    n = samples.shape[0]
    g = torch.Generator().manual_seed(seed)
    ref = posterior.sample(max(n, 1000), generator=g)
    samples = samples.to(ref.dtype)
    sw = float(sliced_wasserstein(samples, ref, n_projections, weights_a=weights, generator=torch.Generator().manual_seed(seed)))
    floor_set = posterior.sample(n, generator=g)
    sw_floor = float(sliced_wasserstein(floor_set, ref, n_projections, generator=torch.Generator().manual_seed(seed)))
    return {"sw": sw, "sw_floor": sw_floor, "mode_tv": mode_tv(posterior, samples, weights),
            "mode_tv_floor": mode_tv(posterior, floor_set)}


def weighted_quantile(samples: torch.Tensor, weights: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile ``q`` along dim 0 of ``samples`` (n, ...) under normalised ``weights`` (n,)
    (the smallest value whose weighted CDF reaches ``q``)."""
    flat = samples.reshape(samples.shape[0], -1)
    vals, idx = flat.sort(0)
    cdf = torch.cumsum(weights[idx], 0) / weights.sum()
    j = (cdf < q).sum(0).clamp_max(flat.shape[0] - 1)
    return vals.gather(0, j[None])[0].reshape(samples.shape[1:])


def credible_coverage(samples: torch.Tensor, weights: torch.Tensor | None, x_true: torch.Tensor,
                      level: float = 0.9) -> torch.Tensor:
    """Whether each coordinate of ``x_true`` lies in the central ``level`` credible interval of
    the (weighted) draws ``samples`` (n, *shape): a boolean tensor of ``x_true``'s shape."""
    w = torch.full((samples.shape[0],), 1.0, dtype=samples.dtype, device=samples.device) if weights is None else weights
    lo = weighted_quantile(samples, w, (1 - level) / 2)
    hi = weighted_quantile(samples, w, (1 + level) / 2)
    return (x_true >= lo) & (x_true <= hi)


def _sigma_max(prior: GaussianMixture) -> float:
    """A starting noise level well above the data's radius (3 times the rms norm, at least 80)."""
    rms = math.sqrt(float((prior.weights @ (prior.means_flat**2).sum(1))) + prior.dim)
    return max(80.0, 3.0 * rms)


def _run_sampler(sampler, prob, n_per: int | None, n_draws: int, gen_seed: int):
    """``n_draws`` draws of ``sampler``: ``n_draws // n_per`` independent ensembles of ``n_per``
    weighted particles (SMC), or ``n_draws`` independent samples (``n_per=None``)."""
    reps = 1 if n_per is None else max(1, n_draws // n_per)
    n_samples = n_draws if n_per is None else n_per
    y = prob["y"].repeat(reps, 1)
    t0 = time.perf_counter()
    out = sampler.sample(y, prob["physics"], n_samples=n_samples, generator=torch.Generator().manual_seed(gen_seed))
    wall = time.perf_counter() - t0
    xs = out.samples.permute(1, 0, 2).reshape(-1, prob["d_x"])  # (reps * n, d): ensemble-major
    w = None
    if out.log_weights is not None:
        w = (torch.softmax(out.log_weights, 0).T.reshape(-1) / reps)
    return xs, w, out.nfe, wall


def gmm_table(quick: bool = True, device: str = "cpu", seeds: int | None = None) -> list[dict]:
    """SW and mode-weight error vs NFE on the MCGdiff mixture for SMC, twisted SMC, DPS and RED-Diff.

    Quick: ``d_x in {8, 80}``, ``d_y in {1, 2}``, ``N in {64, 256}``, 512 draws, 2 random
    problems. Full: ``d_x in {8, 80, 800}``, ``d_y in {1, 2, 4}``, ``N in {64, 256, 1024}``, 1024
    draws, 4 problems. 100 denoiser calls per draw for every sampler (SMC: 99 noise levels and
    one call for its Gaussian data fit, ``data_scale=None``; twisted SMC: 99 and one for its
    fitted twist scale); SMC's draws pool ``draws / N`` independent ensembles. Each row averages over the problems:
    ``sw``, ``sw_floor`` (two exact sets), ``sw_ratio`` (= sw / sw_floor; 1 is exact sampling),
    ``mode_tv``, ``mode_tv_floor`` and ``time_s``. DPS runs on the same Karras noise levels with
    its defaults (``zeta = 1``, norm guidance); RED-Diff with its defaults.
    """
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.samplers.smc import SMCEnsemble, TwistedSMC

    try:
        from invdiff.samplers import DPS
    except ImportError:  # pragma: no cover
        DPS = None
    try:
        from invdiff.samplers import REDDiff
    except ImportError:  # pragma: no cover
        REDDiff = None

    dims = [(8, 1), (8, 2), (80, 1), (80, 2)] if quick else list(itertools.product([8, 80, 800], [1, 2, 4]))
    particles = [64, 256] if quick else [64, 256, 1024]
    steps, n_draws = 100, 512 if quick else 1024
    seeds = (2 if quick else 4) if seeds is None else seeds
    rows: list[dict] = []
    for d_x, d_y in dims:
        acc: dict[tuple, list[dict]] = {}
        for seed in range(seeds):
            prob = mcgdiff_problem(d_x, d_y, seed=seed, device=device)
            prior, smax = prob["prior"], _sigma_max(prob["prior"])
            # SMC with the fitted Gaussian data model: one call of the fit + (steps - 1) levels = the
            # same NFE as the others
            runs = [("SMC ensemble (data fit)", n, lambda: SMCEnsemble(prior, steps=steps - 1, sigma_max=smax,
                                                                        data_scale=None, progress=False))
                    for n in particles]
            runs += [("twisted SMC", n, lambda: TwistedSMC(prior, steps=steps - 1, sigma_max=smax, progress=False))
                     for n in particles[-2:]]
            if DPS is not None:
                runs.append(("DPS", None, lambda: DPS(prior, sigmas=karras_sigmas(steps, 0.002, smax), progress=False)))
            if REDDiff is not None:
                runs.append(("RED-Diff", None, lambda: REDDiff(prior, steps=steps, progress=False)))
            for name, n, make in runs:
                key = (name, n)
                try:
                    xs, w, nfe, wall = _run_sampler(make(), prob, n, n_draws, seed + 1)
                    sc = score_samples(prob["posterior"], xs, w, seed=seed + 2)
                except Exception as err:  # a failing baseline is reported, not fatal
                    acc.setdefault(key, []).append({"error": f"{type(err).__name__}: {err}"[:120]})
                    continue
                acc.setdefault(key, []).append({**sc, "nfe": nfe, "draws": xs.shape[0], "time_s": wall})
        for (name, n), res in acc.items():
            ok = [r for r in res if "error" not in r]
            row = {"d_x": d_x, "d_y": d_y, "sampler": name, "N": n if n is not None else "-", "problems": len(ok)}
            if not ok:
                rows.append({**row, "error": res[0]["error"]})
                continue
            mean = {k: sum(r[k] for r in ok) / len(ok) for k in ("sw", "sw_floor", "mode_tv", "mode_tv_floor", "time_s")}
            rows.append({**row, "nfe": ok[0]["nfe"], "draws": ok[0]["draws"], "sw": round(mean["sw"], 3),
                         "sw_floor": round(mean["sw_floor"], 3), "sw_ratio": round(mean["sw"] / mean["sw_floor"], 2),
                         "mode_tv": round(mean["mode_tv"], 3), "mode_tv_floor": round(mean["mode_tv_floor"], 3),
                         "time_s": round(mean["time_s"], 2)})
    return rows


def calibration_table(quick: bool = True, device: str = "cpu", problems: int | None = None,
                      d_ys: tuple[int, ...] = (1, 2), only: tuple[str, ...] | None = None) -> list[dict]:
    """Coverage of central 90% credible intervals over many random MCGdiff problems (``d_x = 8``).

    For each of ``problems`` random instances (prior weights, operator, noise, ``x_true`` all drawn
    from the seed), each sampler draws 512 (weighted) samples for ``y``; a hit is a coordinate of
    ``x_true`` inside the sampler's central interval. ``coverage`` is the mean over problems of
    the per-problem hit rate and ``coverage_se`` the standard error across problems (coordinates
    of one problem are correlated, so problems are the independent units). Exact posterior draws
    give the reference row, and ``minus_exact`` the paired difference to it on the same problems
    (which removes the problems' shared scatter: 300 problems give exact draws 0.88-0.89, 1500
    give 0.896-0.899); the target for SMC is 0.90 +- 0.03. SMC rows use the fitted Gaussian data
    model (``data_scale=None``, 99 levels + 1 call). Quick: 60 problems, full: 300
    (and SMC at 400 steps as well). ``d_ys`` and ``only`` (sampler names) restrict the table.
    """
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.samplers import DPS
    from invdiff.samplers.smc import SMCEnsemble, TwistedSMC

    problems = (60 if quick else 300) if problems is None else problems
    rows = []
    for d_y in d_ys:
        exact = None
        for steps in ((100,) if quick else (100, 400)):
            samplers = {
                "exact posterior draws": None,
                "SMC ensemble": lambda p, s: SMCEnsemble(p, steps=steps - 1, sigma_max=s, data_scale=None,
                                                         progress=False),
                "SMC ensemble (plain DDPM kernel)": lambda p, s: SMCEnsemble(p, steps=steps - 1, sigma_max=s,
                                                                             data_scale=None, analytic_variance=False,
                                                                             progress=False),
                "twisted SMC": lambda p, s: TwistedSMC(p, steps=steps - 1, sigma_max=s, progress=False),
                "DPS": lambda p, s: DPS(p, sigmas=karras_sigmas(steps, 0.002, s), progress=False),
            }
            for name, make in samplers.items():
                if steps != 100 and name != "SMC ensemble":  # the long run only shows SMC's convergence
                    continue
                if only is not None and name not in only:
                    continue
                per_problem = []
                t0 = time.perf_counter()
                for seed in range(problems):
                    prob = mcgdiff_problem(8, d_y, seed=seed, device=device)
                    gen = torch.Generator().manual_seed(seed)
                    if make is None:
                        xs, w = prob["posterior"].sample(512, generator=gen), None
                    else:
                        out = make(prob["prior"], _sigma_max(prob["prior"])).sample(prob["y"], prob["physics"],
                                                                                    n_samples=512, generator=gen)
                        xs, w = out.samples[:, 0], out.weights()[:, 0]
                    per_problem.append(float(credible_coverage(xs, w, prob["x_true"][0], 0.9).double().mean()))
                c = torch.tensor(per_problem, dtype=torch.float64)
                if make is None:
                    exact = c
                row = {"d_x": 8, "d_y": d_y, "sampler": name, "nfe": 0 if make is None else steps,
                       "problems": problems, "coverage": round(float(c.mean()), 3),
                       "coverage_se": round(float(c.std() / math.sqrt(problems)), 3)}
                if make is not None and exact is not None:  # paired with exact draws on the same problems
                    diff = c - exact
                    row["minus_exact"] = round(float(diff.mean()), 3)
                    row["minus_exact_se"] = round(float(diff.std() / math.sqrt(problems)), 3)
                rows.append({**row, "time_s": round(time.perf_counter() - t0, 1)})
    return rows
