r"""The 2D Navier-Stokes vorticity task of `invdiff bench pde-inverse` (InverseBench style).

Problem (:mod:`invdiff.surrogates.ns_vorticity`): recover the initial vorticity
:math:`\omega_0` (64 x 64, Kolmogorov flow, Re = 200) from :math:`\omega(T = 1)` sub-sampled by
:math:`k \in \{2, 4, 8\}` in each direction, noise :math:`\sigma_y = 0.1` (the field's standard
deviation is about 4):

.. math:: y = P_k\, S_T(\omega_0) + \sigma_y n .

Methods, all through the differentiable pseudo-spectral solver:

* solver in the loop: L-BFGS on :math:`\omega_0` from 0, :math:`\min \|y - P_k S_T(\omega_0)\|^2 / 2\sigma_y^2`
  (no prior), and the same plus the exact Gaussian-random-field prior's quadratic (MAP);
* DPS, DAPS and the SMC ensemble with the exact GRF prior (:class:`~invdiff.surrogates.ns_vorticity.GRFPrior`),
  and DPS with a trained diffusion prior (``configs/ns-vorticity-64.json``, looked up in
  ``$INVDIFF_NS_PRIOR`` or ``runs/ns-vorticity-64``; skipped when absent).

Table ``pde_inverse_ns``: per factor and method, the relative L2 error of :math:`\hat\omega_0`
(posterior mean for the samplers) and of the predicted :math:`\omega(T)`, the posterior spread
against the actual RMS error and the coverage of the pointwise :math:`\pm 2` std interval, and
CPU seconds per problem (one thread).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from invdiff.surrogates.ns_vorticity import GRFPrior, VorticityPhysics, VorticityProblem

SIGMA_Y = 0.1


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


def lbfgs(problem: VorticityProblem, y: torch.Tensor, factor: int, iters: int, prior: GRFPrior | None = None) -> torch.Tensor:
    r"""L-BFGS on :math:`\omega_0` from 0: :math:`\|y - P_k S_T(\omega_0)\|^2 / 2\sigma_y^2` (+ the GRF prior's quadratic)."""
    w0 = torch.zeros(y.shape[0], 1, problem.n, problem.n, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.LBFGS([w0], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((problem.observe(problem.solver(w0), factor) - y) ** 2).sum() / SIGMA_Y**2
        if prior is not None:
            loss = loss + prior.neg_log_prob(w0).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w0.detach()


def trained_prior():
    """The trained vorticity prior, or ``None`` (``$INVDIFF_NS_PRIOR`` or ``runs/ns-vorticity-64``)."""
    from invdiff.diffusion.training import load_checkpoint

    path = Path(os.environ.get("INVDIFF_NS_PRIOR", "runs/ns-vorticity-64"))
    return load_checkpoint(path) if (path / "model.safetensors").exists() or path.is_file() else None


def run(quick: bool = False, factors=(2, 4, 8), n_prob: int | None = None) -> list[dict]:
    from invdiff.samplers import make

    n, n_prob_d, n_samples, steps, iters = (32, 1, 4, 10, 5) if quick else (64, 2, 4, 50, 30)
    n_prob = n_prob or n_prob_d
    factors = (4,) if quick else factors
    problem = VorticityProblem(n)
    exact = problem.prior()
    learned = None if quick else trained_prior()
    gen = torch.Generator().manual_seed(0)
    w0 = problem.sample(n_prob, generator=torch.Generator().manual_seed(2026))  # held-out draws (training uses seed 1)
    with torch.no_grad():
        wT = problem.solver(w0)
    zeta = float(os.environ.get("INVDIFF_NS_DPS_ZETA", "3.0"))
    rows = []
    for k in factors:
        y = problem.observe(wT, k)
        y = y + SIGMA_Y * torch.randn(y.shape, generator=gen)
        physics = VorticityPhysics.make(problem, k, SIGMA_Y)

        def record(method, w_hat, secs, std=None):
            with torch.no_grad():
                wT_hat = problem.solver(w_hat)
            row = dict(factor=f"{k}x", observations=int(y[0].numel()), method=method,
                       rel_l2_w0=float(_rel(w_hat, w0).mean()), rel_l2_wT=float(_rel(wT_hat, wT).mean()),
                       cpu_seconds_per_problem=round(secs, 2))
            if std is not None:
                err = w_hat - w0
                row.update(posterior_std_rms=float(std.pow(2).mean().sqrt()), error_rms=float(err.pow(2).mean().sqrt()),
                           coverage_2std=float((err.abs() <= 2 * std).double().mean()))
            rows.append(row)

        for name, prior in (("L-BFGS, no prior", None), ("L-BFGS MAP, exact GRF prior", exact)):
            t0 = time.process_time()
            w_hat = lbfgs(problem, y, k, iters, prior)
            record(f"{name} ({iters} it.)", w_hat, (time.process_time() - t0) / n_prob)
        samplers = [("dps", exact, "exact GRF prior", dict(steps=steps, zeta=zeta, progress=False)),
                    ("daps", exact, "exact GRF prior", dict(steps=max(5, steps // 5), langevin_steps=5, progress=False)),
                    ("twisted-smc", exact, "exact GRF prior", dict(steps=steps, sigma_max=20.0, progress=False))]
        if learned is not None:
            samplers.append(("dps", learned, "trained prior", dict(steps=steps, zeta=zeta, progress=False)))
        for name, prior, label, kw in samplers:
            sampler = make(name, prior, on_nan="clip", **kw)  # a blown-up solve skips that update (counted below)
            t0 = time.process_time()
            try:
                out = sampler.sample(y, physics, n_samples=n_samples, generator=gen)
            except (FloatingPointError, RuntimeError) as exc:
                rows.append(dict(factor=f"{k}x", observations=int(y[0].numel()), method=f"{name}, {label}: failed ({exc})"[:160]))
                continue
            secs = (time.process_time() - t0) / n_prob
            w = out.weights().reshape(n_samples, n_prob, 1, 1, 1)
            mean = (w * out.samples).sum(0)
            std = (w * (out.samples - mean) ** 2).sum(0).sqrt()
            record(f"{name}, {label} ({n_samples} samples, {kw['steps']} steps)", mean.detach(), secs, std.detach())
            rows[-1]["skipped_updates"] = len(out.trace.get("nonfinite", []))
    return rows
