r"""Adaptive SMC with MALA rejuvenation (:class:`AdaptiveSMC`, registered ``smc-adaptive``).

Tempered twisted targets along the diffusion (twist of TDS, Wu et al. 2023, with the
Gaussian-data variance of :math:`x_0 \mid x`):

.. math::
    \pi_k(x) \propto p_{\sigma_k}(x)\, \tilde p_{\sigma_k}(y \mid x)^{\gamma_k}, \qquad
    \log \tilde p_\sigma(y \mid x) = -\frac{v}{v + \kappa_\sigma}\, \mathrm{nll}\big(D(x, \sigma)\big),
    \qquad \kappa_\sigma = \frac{s_0^2 \sigma^2}{s_0^2 + \sigma^2},

with :math:`v` the likelihood's mean variance, :math:`s_0` the prior's data scale
(``prior.sigma_data`` when it has one, else a Gaussian fit at :math:`\sigma_{max}`), noise levels
on a fixed Karras grid and a likelihood temperature :math:`\gamma_k \in [0, 1]` chosen adaptively.
One level :math:`k \to k+1`:

1. **Resample** (systematic) when the ESS is below ``ess_threshold * N`` (``trace["ess"]`` records
   the ESS of every level before resampling, so :meth:`PosteriorSamples.min_ess` is honest), then
   **rejuvenate** with ``mala_steps`` MALA moves on :math:`\pi_k`:
   :math:`x^* = x + h \nabla\log\pi_k(x) + \sqrt{2h}\,\xi`, the prior's
   :math:`\log p_\sigma(x^*) - \log p_\sigma(x)` by the trapezoidal rule on the denoiser's scores
   (:func:`invdiff.samplers.langevin.log_density_ratio`, exact for Gaussian priors), accepted with
   the Metropolis-Hastings ratio; :math:`h = c\,\sigma_k^2` with :math:`c` adapted towards an
   acceptance rate of 0.574 (Roberts & Rosenthal 1998); ``trace["acceptance"]``, ``trace["mala_scale"]``.
2. **Move** by the prior's reverse kernel :math:`\mathcal N(m, \tau I)` (DDPM given :math:`\hat x_0`,
   with the ensemble's :math:`\mathrm{Var}[x_0 \mid x]`, :func:`~invdiff.samplers.smc.base.analytic_x0_var`)
   guided by the tempered twist, :math:`x' = m + \tau \gamma_k \nabla \log\tilde p + \sqrt\tau\,\xi`.
3. **Weight and temper**: after one twist evaluation at :math:`x'` (a denoiser call and a VJP,
   as a DPS step), the increment is linear in the next temperature,

   .. math::
       \Delta(\gamma') = \log\frac{\mathcal N(x'; m, \tau)}{\mathcal N(x'; m + \tau\gamma_k g, \tau)}
           + \gamma' \log\tilde p_{\sigma_{k+1}}(y \mid x') - \gamma_k \log\tilde p_{\sigma_k}(y \mid x),

   so bisection picks, at no network cost, the largest :math:`\gamma' \le 1` whose conditional
   ESS (Zhou, Johansen & Aston 2016) stays at or above ``target_ess * N`` for every measurement
   (adaptive tempering, Jasra et al. 2011). When no temperature keeps it, the step to the next
   grid level is halved geometrically (``max_halvings``, one more twist evaluation each): the
   adaptive next noise level. With resampling below ``ess_threshold * N`` the ESS before any
   resampling stays above about ``ess_threshold * target_ess * N`` (0.35 N by default).
4. At :math:`\sigma_{min}` the remaining temperature is climbed by tempering levels without a
   diffusion move (reweight, resample, MALA), at most ``max_extra``; a last reweighting
   replaces the twist by the exact likelihood at the particles. ``trace["gamma"]`` holds the
   temperatures, ``trace["forced"]`` the levels where the ESS target could not be kept.

Cost per level: one denoiser call with one VJP (a DPS step), and ``mala_steps`` more after a
resampling. No linear solve, any operator and likelihood.

Example
-------
>>> import torch
>>> import invdiff.diffusion.gmm as gmm
>>> import invdiff.operators as ops
>>> f64 = dict(dtype=torch.float64)
>>> smc = AdaptiveSMC(gmm.Gaussian(torch.zeros(2, **f64), 1.0), steps=30, progress=False)
>>> out = smc.sample(torch.ones(1, 1, **f64), ops.Matrix(torch.eye(2, **f64)[:1], sigma=0.1), n_samples=256,
...                  generator=torch.Generator().manual_seed(0))
>>> round(float(out.mean()[0, 0]), 1), bool(out.min_ess() >= 64)     # exact mean 1 / 1.01
(1.0, True)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.samplers.base import PosteriorSamples, Problem, Recorder
from invdiff.samplers.guidance import guided_grad
from invdiff.samplers.langevin import log_density_ratio, mala_log_q, rowdot
from invdiff.samplers.registry import register
from invdiff.diffusion.solvers import ancestral_sigmas
from invdiff.samplers.smc.base import SMCBase, analytic_x0_var
from invdiff.samplers.smc.resampling import Resampling
from invdiff.utils.progress import progress as progress_bar

__all__ = ["AdaptiveSMC"]

ACCEPT_TARGET = 0.574


@register("smc-adaptive", "Adaptive SMC: ESS-bisected likelihood temperature, twisted moves, MALA rejuvenation")
class AdaptiveSMC(SMCBase):
    """Adaptive tempered twisted SMC over a diffusion prior (module docstring).

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: noise levels (Karras over ``[sigma_min, sigma_max]``).
    :param target_ess: fraction of ``N`` the ESS may fall to in one level (bisection target).
    :param mala_steps: MALA moves after each resampling. :param mala_scale: initial :math:`c`.
    :param max_extra: the most tempering levels at ``sigma_min``.
    :param max_halvings: the most geometric halvings of a grid step that cannot keep the ESS target.
    :param twist_scale: :math:`s_0` (``None``: ``prior.sigma_data``, else fitted).
    :param sigma_max, sigma_min, eta, resampling, ess_threshold, analytic_variance: as
        :class:`~invdiff.samplers.TwistedSMC`.
    :param bisection_iters: bisection steps per level.
    :param var_fraction: last fraction of levels whose :math:`\\hat x_0` enter ``trace["x0_var"]``.
    :param shard_particles: split the particles over ``torchrun`` ranks (:mod:`invdiff.samplers.smc.base`);
        the conditional ESS, the temperatures and the MALA acceptance rate are computed from the
        particles of all ranks, so the run equals the one-process run with the same seed.
    """

    def __init__(self, prior, steps: int = 100, *, target_ess: float = 0.7, mala_steps: int = 1,
                 mala_scale: float = 0.1, max_extra: int = 20, max_halvings: int = 3, twist_scale: float | None = None,
                 sigma_max: float = 80.0, sigma_min: float = 0.002, sigmas: Tensor | None = None, eta: float = 1.0,
                 resampling: Resampling = "systematic", ess_threshold: float = 0.5, analytic_variance: bool = True,
                 bisection_iters: int = 12, var_fraction: float = 0.25, progress: bool = True,
                 on_nan: str = "raise", shard_particles: bool = False) -> None:
        super().__init__(prior, steps, sigma_max=sigma_max, sigma_min=sigma_min, sigmas=sigmas, eta=eta,
                         resampling=resampling, ess_threshold=ess_threshold, analytic_variance=analytic_variance,
                         progress=progress, on_nan=on_nan, shard_particles=shard_particles)
        checks = (("target_ess", target_ess, 0 < target_ess < 1), ("mala_scale", mala_scale, mala_scale > 0),
                  ("var_fraction", var_fraction, 0 < var_fraction <= 1))
        for name, v, ok in checks:
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and ok):
                raise ValueError(f"{name}: expected a number in the documented range, got {v!r}")
        for name, v in (("mala_steps", mala_steps), ("bisection_iters", bisection_iters), ("max_extra", max_extra),
                        ("max_halvings", max_halvings)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {v!r}")
        if twist_scale is not None and not (isinstance(twist_scale, (int, float)) and twist_scale > 0):
            raise ValueError(f"twist_scale: expected None or a number > 0, got {twist_scale!r}")
        self.target_ess, self.mala_steps, self.mala_scale = float(target_ess), mala_steps, float(mala_scale)
        self.max_extra, self.bisection_iters, self.var_fraction = max_extra, bisection_iters, float(var_fraction)
        self.twist_scale, self.max_halvings = twist_scale, max_halvings

    # pieces ---------------------------------------------------------------------------------
    def _twist(self, x: Tensor, sigma: float) -> dict:
        """Denoiser estimate, score, :math:`\\log\\tilde p` and its gradient at ``x`` (one call, one VJP)."""
        kappa = self._s0**2 * sigma**2 / (self._s0**2 + sigma**2)
        factor = self._v / (self._v + kappa)
        x0, g, sq = guided_grad(self.denoiser, x, sigma, self._problem, "squared", weight=-factor)
        return {"x": x, "x0": x0, "score": (x0 - x) / sigma**2, "T": -factor * 0.5 * sq, "g": g}

    def _cess(self, log_w: Tensor, inc: Tensor) -> Tensor:
        """Conditional ESS (Zhou, Johansen & Aston 2016) of the increment ``inc`` under the current
        normalised weights, per measurement: :math:`N (\\sum_i W_i w_i)^2 / \\sum_i W_i w_i^2`
        (``log_w`` and ``inc`` of all particles, as gathered by :meth:`_temper`)."""
        lw, li = self._shard.fold(log_w), self._shard.fold(inc)
        logW = lw - torch.logsumexp(lw, 0, keepdim=True)
        return lw.shape[0] * torch.exp(2 * torch.logsumexp(logW + li, 0) - torch.logsumexp(logW + 2 * li, 0))

    def _temper(self, log_w: Tensor, base: Tensor, T: Tensor, gamma: float) -> tuple[float, bool]:
        """Largest ``g' <= 1`` with the conditional ESS of ``base + g' T`` >= target for every
        measurement (bisection from the last feasible of ``gamma`` and 0); ``forced`` when none is."""
        target = self.target_ess * self._shard.n_total
        log_w, base, T = (self._shard.gather(t) for t in (log_w, base, T))

        def score(gp):
            return float(self._cess(log_w, base + gp * T).min())

        if score(1.0) >= target:
            return 1.0, False
        lo = gamma if score(gamma) >= target else (0.0 if score(0.0) >= target else None)
        if lo is None:  # no temperature keeps the target: the one of largest CESS on a grid
            return max((j / 10 for j in range(11)), key=score), True
        hi = 1.0
        for _ in range(self.bisection_iters):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if score(mid) >= target else (lo, mid)
        return lo, False

    def _mala(self, st: dict, sigma: float, gamma: float, generator, trace: dict) -> dict:
        """``mala_steps`` MALA moves on :math:`\\pi = p_\\sigma \\tilde p^\\gamma` (module docstring)."""
        for _ in range(self.mala_steps):
            h = self._c * sigma**2
            x, grad = st["x"], st["score"] + gamma * st["g"]
            prop = x + h * grad + math.sqrt(2 * h) * self._shard.randn(x.shape, generator, x.device, x.dtype)
            new = self._twist(prop, sigma)
            grad_new = new["score"] + gamma * new["g"]
            log_a = (log_density_ratio(x, prop, st["score"], new["score"]) + gamma * (new["T"] - st["T"])
                     + mala_log_q(x, prop, grad_new, h) - mala_log_q(prop, x, grad, h))
            acc = torch.log(self._shard.rand(log_a.shape, generator, x.device, x.dtype)) < log_a
            st = {k: torch.where(acc.reshape(-1, *([1] * (v.ndim - 1))), new[k], v) for k, v in st.items()}
            rate = float(self._shard.gather(acc).double().mean())
            trace["acceptance"].append(rate)
            trace["mala_scale"].append(self._c)
            self._c = min(max(self._c * math.exp(2.0 * (rate - ACCEPT_TARGET)), 1e-4), 2.0)
        return st

    def _level(self, st: dict, log_w: Tensor, sigma: float, sigma_next: float, gamma: float, i: int, generator):
        """Guided move to ``sigma_next``, twist there (one call + VJP), next temperature by bisection."""
        problem = self._problem
        down, up = ancestral_sigmas(sigma, sigma_next, self.eta)
        v = analytic_x0_var(problem, st["x"], st["x0"], log_w, sigma, self._shard) if self.analytic_variance else 0.0
        m = st["x0"] + (down / sigma) * (st["x"] - st["x0"])
        tau = up**2 + (1.0 - down / sigma) ** 2 * v
        drift = tau * gamma * st["g"]
        x_new = m + drift + math.sqrt(tau) * self._shard.randn(m.shape, generator, m.device, m.dtype)
        x_new = self.check(x_new, i, fallback=m)
        new = self._twist(x_new, sigma_next)
        d = x_new - m
        base = -gamma * st["T"]
        if tau > 0:  # log N(x'; m, tau) - log N(x'; m + drift, tau)
            base = base + (rowdot(d - drift, d - drift) - rowdot(d, d)) / (2 * tau)
        g_new, forced = self._temper(log_w, base, new["T"], gamma)
        return new, base, g_new, forced

    def _rejuvenate(self, st, log_w, sigma, gamma, i, trace, generator):
        """Resample when the ESS is low (recording it), then MALA if resampled."""
        log_w, *vals = self._maybe_resample(self._problem, log_w, i, trace, generator, *st.values())
        st = dict(zip(st.keys(), vals))
        if trace["resampled"] and trace["resampled"][-1] == i and self.mala_steps > 0:
            st = self._mala(st, sigma, gamma, generator, trace)
        return st, log_w

    # the loop -------------------------------------------------------------------------------
    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        sig = self.sigmas.tolist()[:-1]  # the Karras levels; the run ends at sigma_min
        n, shape, dt, dev = problem.n, problem.x_shape, problem.dtype, problem.device
        self._problem, self._c = problem, self.mala_scale
        self._v = problem.likelihood.mean_variance(problem.y)  # (n,)
        s0 = self.twist_scale if self.twist_scale is not None else getattr(self.prior, "sigma_data", None)
        if s0 is None:
            s0 = math.sqrt(self._fit_data(problem, sig[0], generator)[1])
        self._s0 = float(s0)
        trace: dict = {"ess": [], "resampled": [], "gamma": [], "sigma": [sig[0]], "acceptance": [], "mala_scale": [], "forced": [],
                       "twist_scale": self._s0}
        x0_hist: list[Tensor] = []
        st = self._twist(sig[0] * self._shard.randn((n, *shape), generator, dev, dt), sig[0])
        zero = torch.zeros(n, dtype=dt, device=dev)
        gamma, forced = self._temper(zero, zero, st["T"], 0.0)
        log_w = self._check_log_w(gamma * st["T"], 0, trace)
        trace["gamma"].append(gamma)
        record(0, st["x"])
        k, level = 0, 0
        for k in progress_bar(range(len(sig) - 1), self.progress, desc="adaptive SMC"):
            sigma, goal = sig[k], sig[k + 1]
            while sigma > goal:  # sub-steps: halve (geometrically) a step that cannot keep the ESS target
                st, log_w = self._rejuvenate(st, log_w, sigma, gamma, level, trace, generator)
                for split in range(self.max_halvings + 1):
                    sigma_next = goal if split == 0 else math.sqrt(sigma * sigma_next)
                    new, base, g_new, forced = self._level(st, log_w, sigma, sigma_next, gamma, level, generator)
                    if not forced:
                        break
                if forced:
                    trace["forced"].append(level)
                log_w = self._check_log_w(log_w + base + g_new * new["T"], level, trace)
                gamma, sigma, st = g_new, sigma_next, new
                trace["gamma"].append(gamma)
                trace["sigma"].append(sigma)
                level += 1
            x0_hist.append(st["x0"])
            record(k + 1, st["x"])
        # tempering levels at sigma_min, then the exact likelihood in place of the twist
        for j in range(self.max_extra):
            if gamma >= 1.0:
                break
            i = level + j
            st, log_w = self._rejuvenate(st, log_w, sig[-1], gamma, i, trace, generator)
            g_new, forced = self._temper(log_w, -gamma * st["T"], st["T"], gamma)
            if forced or (j == self.max_extra - 1 and g_new < 1.0):
                trace["forced"].append(i)
            log_w = self._check_log_w(log_w + (g_new - gamma) * st["T"], i, trace)
            gamma = g_new
            trace["gamma"].append(gamma)
        log_w = self._check_log_w(log_w - problem.nll(st["x"]).detach() - gamma * st["T"], level, trace)
        trace["levels"] = len(trace["gamma"]) - 1
        n_var = max(1, round(self.var_fraction * len(x0_hist)))
        if x0_hist:
            trace["x0_var"] = self._shard.fold(self._shard.gather(torch.stack(x0_hist[-n_var:]).var(0, unbiased=False)))
        record(k + 1, st["x"], last=True)
        return self._finish(problem, st["x"], log_w, trace)
