"""The common part of invdiff's SMC samplers (:class:`SMCBase`)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.diffusion.denoiser import gaussian_fit
from invdiff.diffusion.solvers import make_solver
from invdiff.samplers.base import PosteriorSamples, Problem, Sampler, karras_levels
from invdiff.samplers.smc.resampling import RESAMPLERS, Resampling, ess, gather_rows, resample

__all__ = ["SMCBase", "analytic_x0_var", "rowdot"]


def analytic_x0_var(problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, sigma: float) -> float:
    """Mean posterior variance of :math:`x_0` per coordinate, from the ensemble (Analytic-DPM,
    Bao et al. 2022): by Tweedie, :math:`\\mathbb E\\,\\mathrm{Var}[x_0 \\mid x]/d = \\sigma^2 -
    \\mathbb E\\|D(x, \\sigma) - x\\|^2 / d`, the expectation taken over the weighted particles of all
    measurements; clamped to :math:`[0, \\sigma^2]`. Exact in expectation for a Gaussian prior
    (:math:`v = s^2 \\sigma^2 / (s^2 + \\sigma^2)`); no extra denoiser call."""
    w = torch.softmax(problem.fold(log_w), 0).reshape(-1) / problem.batch  # rows k * B + b
    r2 = float((w * (x0_hat - x).pow(2).flatten(1).sum(1)).sum()) / x[0].numel()
    return min(max(sigma**2 - r2, 0.0), sigma**2)


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)



class SMCBase(Sampler):
    """Set-up shared by the SMC samplers: Karras noise levels ending at 0, the prior kernel (the
    solvers' DDIM(``eta``) transition, :meth:`invdiff.diffusion.solvers.Solver.transition`, with
    the ensemble's :math:`\\mathrm{Var}[x_0 \\mid x]` added), ESS-triggered resampling, NaN
    handling of log-weights and the weighted result."""

    def __init__(self, prior, steps: int, *, sigma_max: float, sigma_min: float, sigmas: Tensor | None,
                 eta: float, resampling: Resampling, ess_threshold: float, analytic_variance: bool,
                 progress: bool, on_nan: str) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        sigmas = karras_levels(steps, sigmas, sigma_min, sigma_max)
        if not (isinstance(eta, (int, float)) and 0 < eta <= 1):
            raise ValueError(f"eta: expected 0 < eta <= 1, got {eta!r}")
        if resampling not in RESAMPLERS:
            raise ValueError(f"resampling: expected one of {sorted(RESAMPLERS)}, got {resampling!r}")
        if not (isinstance(ess_threshold, (int, float)) and 0 <= ess_threshold <= 1):
            raise ValueError(f"ess_threshold: expected a number in [0, 1], got {ess_threshold!r}")
        self.sigmas = sigmas.to(torch.float64)
        self.steps = len(self.sigmas) - 1
        self.eta, self.resampling, self.ess_threshold = float(eta), resampling, float(ess_threshold)
        self.analytic_variance = bool(analytic_variance)
        self.kernel_solver = make_solver("ddim", self.sigmas, eta=self.eta)

    def _fit_data(self, problem: Problem, sigma: float, generator) -> tuple[Tensor, float]:
        """Isotropic Gaussian fit ``(m, s^2)`` of the prior at ``sigma`` (one batched denoiser call)."""
        return gaussian_fit(self.denoiser, problem.x_shape, sigma, n=max(16, min(problem.n, 256)),
                            generator=generator, dtype=problem.dtype, device=problem.device)

    def _kernel(self, problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, i: int) -> tuple[Tensor, float]:
        """The prior transition's mean and variance :math:`\\tau` from step ``i``: the DDIM(eta)
        kernel given :math:`\\hat x_0`, :math:`\\mathcal N(m, \\mathrm{std}^2 I)`, averaged over
        :math:`x_0 \\mid x` with isotropic variance ``v`` (``analytic_variance``), which adds
        :math:`w^2 v` with :math:`w` the weight of :math:`\\hat x_0` in the mean."""
        solver = self.kernel_solver
        v = analytic_x0_var(problem, x, x0_hat, log_w, solver.sigmas[i]) if self.analytic_variance else 0.0
        m, std = solver.transition(i, x, x0_hat)
        return m, std**2 + solver.x0_weight(i) ** 2 * v

    def _maybe_resample(self, problem: Problem, log_w: Tensor, i: int, trace: dict, generator, *tensors):
        """Record the ESS; resample ``tensors`` (rows of the working batch) when it is low."""
        lw = problem.fold(log_w)
        e = ess(lw)
        trace["ess"].append(e.cpu())
        if bool((e < self.ess_threshold * problem.n_samples).any()):
            low = e < self.ess_threshold * problem.n_samples
            idx = resample(lw, self.resampling, generator)
            keep = torch.arange(problem.n_samples, device=idx.device)[:, None].expand_as(idx)
            idx = torch.where(low[None, :], idx, keep)  # only the measurements whose ESS is low
            out = gather_rows(problem, idx, log_w, *tensors)
            lw_new = problem.fold(out[0])
            lw_new = torch.where(low[None, :], torch.zeros_like(lw_new), lw_new)
            trace["resampled"].append(i)
            return [problem.unfold(lw_new)] + out[1:]
        return [log_w, *tensors]

    def _check_log_w(self, log_w: Tensor, i: int, trace: dict) -> Tensor:
        """NaN/+inf log-weights: raise naming the step, or (``on_nan="clip"``) give those particles weight 0."""
        bad = torch.isnan(log_w) | (log_w == math.inf)
        if not bool(bad.any()):
            return log_w
        if self.on_nan == "raise":
            self.check(log_w[:, None], i, trace=trace, what="log-weights")
        trace.setdefault("nonfinite", []).append((i, int(bad.sum())))
        return torch.where(bad, torch.full_like(log_w, -math.inf), log_w)

    def _finish(self, problem: Problem, x: Tensor, log_w: Tensor, trace: dict) -> PosteriorSamples:
        trace["ess"].append(ess(problem.fold(log_w)).cpu())
        trace["ess"] = torch.stack(trace["ess"])
        lw = problem.fold(log_w)
        lw = lw - torch.logsumexp(lw, 0, keepdim=True)
        return PosteriorSamples(problem.fold(x.detach()), lw.detach(), nfe=self.denoiser.nfe, trace=trace)
