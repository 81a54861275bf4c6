"""Twisted diffusion sampling (TDS, Wu et al. 2023) over ``D(x, sigma)`` (:class:`TwistedSMC`)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.samplers.base import PosteriorSamples, Problem, Recorder
from invdiff.samplers.guidance import guided_grad
from invdiff.samplers.registry import register
from invdiff.samplers.smc.base import SMCBase, rowdot
from invdiff.samplers.smc.resampling import Resampling
from invdiff.utils.progress import progress as progress_bar

__all__ = ["TwistedSMC"]


@register("twisted-smc", "Twisted SMC (TDS, Wu et al. 2023): particles twisted by the x0 estimate")
class TwistedSMC(SMCBase):
    """Twisted diffusion sampler (Wu, Trippe, Naesseth, Blei, Cunningham 2023) over ``D(x, sigma)``.

    Twisting function and its gradient from one vector-Jacobian product through the denoiser:

    .. math::
        \\log \\tilde p_\\sigma(y \\mid x) = -\\frac{\\|y - \\mathcal A(D(x, \\sigma))\\|^2}{2(\\sigma_y^2 + \\kappa_\\sigma)},
        \\qquad \\kappa_\\sigma = \\frac{s_0^2 \\sigma^2}{s_0^2 + \\sigma^2},

    where :math:`\\kappa_\\sigma` is the variance of :math:`x_0` given :math:`x` under a
    :math:`\\mathcal N(\\cdot, s_0^2 I)` prior (``twist_scale = s_0``; it makes the twist exact for a
    Gaussian prior with an operator of orthonormal rows; the default ``None`` fits it from the
    denoiser, :func:`invdiff.diffusion.denoiser.gaussian_fit`, one extra call; ``twist_scale=0`` is TDS's plain
    :math:`\\sigma_y^2`). Proposal and weight, with the prior kernel :math:`\\mathcal N(m, \\tau I)`:

    .. math::
        x' \\sim \\mathcal N(m + \\tau \\nabla_x \\log \\tilde p_\\sigma, \\tau I), \\qquad
        w \\mathrel{*}= \\frac{\\mathcal N(x'; m, \\tau I)\\, \\tilde p_{\\sigma'}(y \\mid x')}
        {\\mathcal N(x'; m + \\tau \\nabla \\log \\tilde p_\\sigma, \\tau I)\\, \\tilde p_\\sigma(y \\mid x)},

    and :math:`\\tilde p_0` is the exact likelihood. Gaussian likelihood only; any operator.
    Parameters as :class:`SMCEnsemble` (``shard_particles`` included), plus ``twist_scale``.
    """

    def __init__(self, prior, steps: int = 100, *, sigma_max: float = 80.0, sigma_min: float = 0.002,
                 sigmas: Tensor | None = None, eta: float = 1.0, resampling: Resampling = "systematic",
                 ess_threshold: float = 0.5, analytic_variance: bool = True, twist_scale: float | None = None,
                 progress: bool = True,
                 on_nan: str = "raise", shard_particles: bool = False) -> None:
        super().__init__(prior, steps, sigma_max=sigma_max, sigma_min=sigma_min, sigmas=sigmas, eta=eta,
                         resampling=resampling, ess_threshold=ess_threshold, analytic_variance=analytic_variance,
                         progress=progress, on_nan=on_nan, shard_particles=shard_particles)
        if twist_scale is not None and not (isinstance(twist_scale, (int, float)) and twist_scale >= 0):
            raise ValueError(f"twist_scale: expected None (fitted) or a number >= 0, got {twist_scale!r}")
        self.twist_scale = None if twist_scale is None else float(twist_scale)

    def _twist(self, problem: Problem, x: Tensor, sigma: float, s0: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(x0_hat, log p~, grad log p~)`` at noise level ``sigma`` (0: the exact likelihood)."""
        if sigma == 0:
            return x, -problem.nll(x).detach(), torch.zeros_like(x)
        kappa = s0**2 * sigma**2 / (s0**2 + sigma**2) if s0 > 0 else 0.0
        factor = (problem.sigma_y.flatten() ** 2 / (problem.sigma_y.flatten() ** 2 + kappa))  # (n,)
        # log p~ = -factor * ||r(x0_hat)||^2 / 2 and its gradient: the shared guided step, weighted
        x0_hat, g, sq = guided_grad(self.denoiser, x, sigma, problem, "squared", weight=-factor)
        return x0_hat, -factor * (0.5 * sq), g

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        if problem.sigma_y is None:
            raise ValueError("TwistedSMC: needs a Gaussian likelihood with one noise level per measurement, got "
                             f"{type(problem.likelihood).__name__}")
        sigmas = self.sigmas.tolist()
        trace: dict = {"ess": [], "resampled": []}
        n, shape, dt, dev = problem.n, problem.x_shape, problem.dtype, problem.device
        s0 = self.twist_scale
        if s0 is None:
            s0 = math.sqrt(self._fit_data(problem, sigmas[0], generator)[1])
        trace["twist_scale"] = s0
        x = sigmas[0] * self._shard.randn((n, *shape), generator, dev, dt)
        x0_hat, log_twist, g = self._twist(problem, x, sigmas[0], s0)
        log_w = log_twist.clone()
        record(0, x)
        for i in progress_bar(range(self.steps), self.progress, desc="Twisted SMC"):
            sigma_next = sigmas[i + 1]
            log_w, x, x0_hat, log_twist, g = self._maybe_resample(problem, log_w, i, trace, generator,
                                                                  x, x0_hat, log_twist, g)
            m, tau = self._kernel(problem, x, x0_hat, log_w, i)
            if tau > 0:
                noise = math.sqrt(tau) * self._shard.randn(x.shape, generator, dev, dt)
                x_new = m + tau * g + noise
                # log N(x'; m, tau) - log N(x'; m + tau g, tau) = -g.(x' - m) + tau |g|^2 / 2
                log_prop = -rowdot(g, x_new - m) + 0.5 * tau * rowdot(g, g)
            else:
                x_new, log_prop = m, torch.zeros_like(log_w)
            x_new = self.check(x_new, i, fallback=m, trace=trace)
            x0_new, twist_new, g_new = self._twist(problem, x_new, sigma_next, s0)
            log_w = self._check_log_w(log_w + log_prop + twist_new - log_twist, i, trace)
            x, x0_hat, log_twist, g = x_new, x0_new, twist_new, g_new
            record(i + 1, x, last=i == self.steps - 1)
        return self._finish(problem, x, log_w, trace)
