r"""The common part of invdiff's SMC samplers (:class:`SMCBase`).

Particles sharded over ranks (``shard_particles=True`` under ``torchrun``): each rank holds
its block of the ``N`` particles (:class:`invdiff.distributed.ParticleShard`) and runs the
network on those only. Everything that couples particles goes through the shard: the noise is
the single-process draw sliced to the local rows; the log-weights are all-gathered for the ESS,
the resampling ancestors (computed alike on every rank from the same generator), the
ensemble's :math:`\mathrm{Var}[x_0 \mid x]` and the log-evidence; the result is gathered on
every rank. The run therefore equals the single-process run with the same seed: the same
ancestors, ESS and log-evidence, and the same samples up to the rounding of a batched network
call on fewer rows (bit for bit where the denoiser's rows do not depend on the batch size).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.diffusion.denoiser import gaussian_fit
from invdiff.diffusion.solvers import make_solver
from invdiff.distributed import ParticleShard
from invdiff.samplers.base import PosteriorSamples, Problem, Sampler, karras_levels
from invdiff.samplers.smc.resampling import RESAMPLERS, Resampling, ess, resample

__all__ = ["SMCBase", "analytic_x0_var", "rowdot"]


def analytic_x0_var(problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, sigma: float,
                    shard: ParticleShard | None = None) -> float:
    """Mean posterior variance of :math:`x_0` per coordinate, from the ensemble (Analytic-DPM,
    Bao et al. 2022): by Tweedie, :math:`\\mathbb E\\,\\mathrm{Var}[x_0 \\mid x]/d = \\sigma^2 -
    \\mathbb E\\|D(x, \\sigma) - x\\|^2 / d`, the expectation taken over the weighted particles of all
    measurements; clamped to :math:`[0, \\sigma^2]`. Exact in expectation for a Gaussian prior
    (:math:`v = s^2 \\sigma^2 / (s^2 + \\sigma^2)`); no extra denoiser call. ``shard``: the particles
    of all ranks (:class:`~invdiff.distributed.ParticleShard`; default: this process holds all)."""
    sh = shard or ParticleShard(problem.n_samples, problem.batch)
    w = torch.softmax(sh.fold(sh.gather(log_w)), 0).reshape(-1) / problem.batch  # rows k * B + b
    r2 = float((w * sh.gather((x0_hat - x).pow(2).flatten(1).sum(1))).sum()) / x[0].numel()
    return min(max(sigma**2 - r2, 0.0), sigma**2)


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)



class SMCBase(Sampler):
    """Set-up shared by the SMC samplers: Karras noise levels ending at 0, the prior kernel (the
    solvers' DDIM(``eta``) transition, :meth:`invdiff.diffusion.solvers.Solver.transition`, with
    the ensemble's :math:`\\mathrm{Var}[x_0 \\mid x]` added), ESS-triggered resampling, NaN
    handling of log-weights, the log-evidence and the weighted result; particles sharded over
    ``torchrun`` ranks with ``shard_particles=True`` (module docstring).

    The log-evidence ``trace["log_evidence"]`` ``(B,)`` is the standard SMC estimate
    :math:`\\log\\hat Z = \\sum_{t} \\log \\frac1N \\sum_k e^{\\ell_k^{(t)}}`, summed over the
    resampling times of each measurement and the end (:math:`\\ell` the log-weights since the last
    resampling): the log of the normaliser of the final weighted target relative to the initial
    proposal, up to the constants the weights leave out (e.g. the likelihood's Gaussian constant).
    """

    def __init__(self, prior, steps: int, *, sigma_max: float, sigma_min: float, sigmas: Tensor | None,
                 eta: float, resampling: Resampling, ess_threshold: float, analytic_variance: bool,
                 progress: bool, on_nan: str, shard_particles: bool = False) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        if not isinstance(shard_particles, bool):
            raise ValueError(f"shard_particles: expected True or False, got {shard_particles!r}")
        self.shard_particles = shard_particles
        self._shard: ParticleShard | None = None
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

    def sample(self, y: Tensor, physics, n_samples: int = 1, generator: torch.Generator | None = None,
               record_every: int | None = None, **kwargs) -> PosteriorSamples:
        """As :meth:`invdiff.samplers.base.Sampler.sample`; with ``shard_particles`` under ``torchrun``
        this rank runs its block of the ``n_samples`` particles and every rank returns all of them
        (``generator`` required, seeded alike on every rank; no ``record_every``)."""
        batch = y.shape[0] if isinstance(y, Tensor) and y.ndim >= 2 else 1
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
            raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
        shard = ParticleShard.current(n_samples, batch) if self.shard_particles else ParticleShard(n_samples, batch)
        if shard.world > 1:
            if record_every is not None:
                raise ValueError("record_every: trajectories are not recorded with particles sharded over ranks")
            shard.check_generator(generator)
        self._shard = shard
        try:
            return super().sample(y, physics, shard.n_local, generator, record_every, **kwargs)
        finally:
            self._shard = None

    def _fit_data(self, problem: Problem, sigma: float, generator) -> tuple[Tensor, float]:
        """Isotropic Gaussian fit ``(m, s^2)`` of the prior at ``sigma`` (one batched denoiser call;
        the same draw and fit on every rank when the particles are sharded)."""
        n = self._shard.n_total * problem.batch
        return gaussian_fit(self.denoiser, problem.x_shape, sigma, n=max(16, min(n, 256)),
                            generator=generator, dtype=problem.dtype, device=problem.device)

    def _kernel(self, problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, i: int) -> tuple[Tensor, float]:
        """The prior transition's mean and variance :math:`\\tau` from step ``i``: the DDIM(eta)
        kernel given :math:`\\hat x_0`, :math:`\\mathcal N(m, \\mathrm{std}^2 I)`, averaged over
        :math:`x_0 \\mid x` with isotropic variance ``v`` (``analytic_variance``), which adds
        :math:`w^2 v` with :math:`w` the weight of :math:`\\hat x_0` in the mean."""
        solver = self.kernel_solver
        v = analytic_x0_var(problem, x, x0_hat, log_w, solver.sigmas[i], self._shard) if self.analytic_variance else 0.0
        m, std = solver.transition(i, x, x0_hat)
        return m, std**2 + solver.x0_weight(i) ** 2 * v

    def _maybe_resample(self, problem: Problem, log_w: Tensor, i: int, trace: dict, generator, *tensors):
        """Record the ESS; resample ``tensors`` (rows of the working batch) when it is low (the
        log-weights of all ranks decide; each rank keeps its block of the new particles)."""
        sh = self._shard
        lw = sh.fold(sh.gather(log_w))
        e = ess(lw)
        trace["ess"].append(e.cpu())
        if bool((e < self.ess_threshold * sh.n_total).any()):
            low = e < self.ess_threshold * sh.n_total
            self._add_evidence(trace, lw, low)
            idx = resample(lw, self.resampling, generator)
            keep = torch.arange(sh.n_total, device=idx.device)[:, None].expand_as(idx)
            idx = torch.where(low[None, :], idx, keep)  # only the measurements whose ESS is low
            lw_new = lw.gather(0, idx)
            lw_new = torch.where(low[None, :], torch.zeros_like(lw_new), lw_new)
            trace["resampled"].append(i)
            return [sh.local(lw_new.reshape(-1))] + sh.take(idx, *tensors)
        return [log_w, *tensors]

    @staticmethod
    def _add_evidence(trace: dict, lw: Tensor, mask: Tensor | None = None) -> None:
        """Add :math:`\\log \\frac1N \\sum_k e^{\\ell_k}` of the folded log-weights ``lw`` ``(N, B)`` to
        ``trace["log_evidence"]`` for the measurements in ``mask`` (all when None)."""
        inc = (torch.logsumexp(lw.detach(), 0) - math.log(lw.shape[0])).double().cpu()
        if mask is not None:
            inc = torch.where(mask.cpu(), inc, torch.zeros_like(inc))
        trace["log_evidence"] = trace.get("log_evidence", 0.0) + inc

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
        sh = self._shard
        lw = sh.fold(sh.gather(log_w))
        trace["ess"].append(ess(lw).cpu())
        trace["ess"] = torch.stack(trace["ess"])
        self._add_evidence(trace, lw)
        lw = lw - torch.logsumexp(lw, 0, keepdim=True)
        return PosteriorSamples(sh.fold(sh.gather(x.detach())), lw.detach(), nfe=self.denoiser.nfe, trace=trace)
