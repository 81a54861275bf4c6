r"""Deterministic plug-and-play ODE (DiffPace-style) and annealed Langevin (Arvinte and Tamir 2022).

Two posterior estimators for linear physics with Gaussian (or circular complex Gaussian) noise of
per-channel standard deviation :math:`\sigma_y` (``problem.sigma_y``), written for channel
estimation (:mod:`invdiff.wireless`) but valid for any ``LinearPhysics``.

**PnP-ODE** (``"pnp-ode"``; DiffPace, Hu, Han, Gerstacker, Schober 2025: a diffusion prior used
plug-and-play inside a deterministic ODE sampler; the data step is the exact proximal step of
DiffPIR, Zhu et al. 2023, with the stochastic part switched off). On Karras levels
:math:`\sigma_0 > \dots > \sigma_{K-1} > \sigma_K = 0`:

.. math::
    \hat x_0 &= D(x_k, \sigma_k), \\
    \tilde x_0 &= \arg\min_x \frac{1}{2\sigma_y^2}\|Ax - y\|^2 + \frac{\lambda}{2\sigma_k^2}\|x - \hat x_0\|^2
      \quad(\texttt{physics.prox\_l2},\ \gamma = \sigma_k^2 / (\lambda\sigma_y^2)), \\
    x_{k+1} &= \tilde x_0 + \frac{\sigma_{k+1}}{\sigma_k}(x_k - \tilde x_0)

(the DDIM / Euler step of the probability-flow ODE with the corrected :math:`\tilde x_0`),
started from :math:`x_0 = \sigma_0 \varepsilon`; one network evaluation per step, no gradient
through the network. The registered DDS with ``eta=0`` is the same scheme with a CG data step and
another proximal weight. For :class:`~invdiff.operators.channel.HybridBeamforming` the proximal
step is exact (eigen-decomposition); other operators use deepinv's ``prox_l2`` (CG).

**Annealed Langevin** (``"annealed-langevin"``; score-based channel estimation of Arvinte and
Tamir 2022, after Song and Ermon 2019 and Jalal et al. 2021): geometric levels
:math:`\sigma_1 > \dots > \sigma_L`, ``T`` steps per level, step :math:`a_k = \min(\epsilon\sigma_k^2/\sigma_L^2,\ 1/L_k)`
with :math:`L_k = \|A\|_2^2/(\sigma_y^2 + \sigma_k^2) + 1/\sigma_k^2` the curvature of the
drift's potential (a stability cap we add: without it the likelihood term diverges at high SNR):

.. math::
    x \leftarrow x + a_k\Bigl(\frac{D(x,\sigma_k) - x}{\sigma_k^2}
    + \frac{A^\top(y - Ax)}{\sigma_y^2 + \sigma_k^2}\Bigr) + \sqrt{2 a_k}\, z
    \quad (\text{no noise on the very last step}).

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators.matrix import Matrix
>>> pnp = PnPODE(Gaussian(torch.zeros(4), 1.0), steps=5, progress=False)
>>> out = pnp.sample(torch.ones(1, 4), Matrix(torch.eye(4), sigma=0.1), generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.nfe
(torch.Size([1, 1, 4]), 5)
"""
from __future__ import annotations

import math

import torch

from invdiff.diffusion.schedules import karras_sigmas
from invdiff.samplers.base import Sampler
from invdiff.samplers.langevin import likelihood_curvature
from invdiff.samplers.registry import register
from invdiff.samplers.results import PosteriorSamples
from invdiff.utils.progress import progress as _progress
from invdiff.utils.random import randn

__all__ = ["PnPODE", "AnnealedLangevin"]


def _sigma_y(problem) -> torch.Tensor:
    s = problem.sigma_y
    if s is None:
        raise ValueError("this sampler needs Gaussian noise with one std per measurement (problem.sigma_y); "
                         f"got the likelihood {type(problem.likelihood).__name__}")
    return s


@register("pnp-ode", "DiffPace-style deterministic plug-and-play ODE: exact prox data step + DDIM/Euler, no VJP")
class PnPODE(Sampler):
    """Deterministic plug-and-play ODE estimator (module docstring).

    :param steps: noise levels (= network evaluations).
    :param sigma_max, sigma_min, rho: the Karras levels.
    :param lam: weight :math:`\\lambda` of the prior term in the proximal step.
    """

    def __init__(self, prior, steps: int = 20, *, sigma_max: float = 5.0, sigma_min: float = 0.002, rho: float = 7.0,
                 lam: float = 1.0, progress: bool = True, on_nan: str = "raise") -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam: expected a finite number > 0, got {lam!r}")
        self.steps, self.lam = steps, float(lam)
        self.sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)

    def _sample(self, problem, generator, record) -> PosteriorSamples:
        sy2 = _sigma_y(problem).reshape(-1) ** 2
        phys, y = problem.physics, problem.y
        x = float(self.sigmas[0]) * randn((problem.n, *problem.x_shape), generator=generator, device=problem.device,
                                          dtype=problem.dtype)
        xt = x
        for k in _progress(range(self.steps), enabled=self.progress, desc="PnP-ODE"):
            s, s_next = float(self.sigmas[k]), float(self.sigmas[k + 1])
            with torch.no_grad():
                x0_hat = self.denoiser(x, s)
                gamma = s**2 / (self.lam * sy2)
                xt = phys.prox_l2(x0_hat, y, float(gamma[0]) if bool((gamma == gamma[0]).all()) else gamma)
                x = self.check(xt + (s_next / s) * (x - xt), k)
            record(k, x, last=k == self.steps - 1)
        return PosteriorSamples(problem.fold(xt), None, nfe=self.denoiser.nfe)


@register("annealed-langevin", "annealed Langevin posterior sampling (Arvinte & Tamir 2022), many steps, no VJP")
class AnnealedLangevin(Sampler):
    """Annealed Langevin dynamics on the posterior (module docstring).

    :param levels: geometric noise levels :math:`L`; :param steps_per_level: ``T``.
    :param eps: step scale :math:`\\epsilon` (``a_k = eps sigma_k^2 / sigma_L^2``).
    """

    def __init__(self, prior, levels: int = 200, steps_per_level: int = 3, *, sigma_max: float = 5.0,
                 sigma_min: float = 0.01, eps: float = 2e-5, progress: bool = True, on_nan: str = "raise") -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        for name, v in (("levels", levels), ("steps_per_level", steps_per_level)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not 0 < sigma_min < sigma_max or not eps > 0:
            raise ValueError(f"expected 0 < sigma_min < sigma_max and eps > 0, got {sigma_min}, {sigma_max}, {eps}")
        self.levels, self.steps_per_level, self.eps, self.sigma_min = levels, steps_per_level, float(eps), float(sigma_min)
        self.sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64))

    def _sample(self, problem, generator, record) -> PosteriorSamples:
        shape = (problem.n, *problem.x_shape)
        sy2 = _sigma_y(problem).reshape(-1, *([1] * len(problem.x_shape))) ** 2
        phys, y = problem.physics, problem.y
        norm2 = likelihood_curvature(problem) * float(sy2.min())  # ||A||_2^2
        x = float(self.sigmas[0]) * randn(shape, generator=generator, device=problem.device, dtype=problem.dtype)
        for k in _progress(range(self.levels), enabled=self.progress, desc="Langevin"):
            s = float(self.sigmas[k])
            a = min(self.eps * s**2 / self.sigma_min**2, 1.0 / (norm2 / (float(sy2.min()) + s**2) + 1.0 / s**2))
            for t in range(self.steps_per_level):
                with torch.no_grad():
                    score = (self.denoiser(x, s) - x) / s**2
                    lik = phys.A_adjoint(y - phys.A(x)) / (sy2 + s**2)
                    x = x + a * (score + lik)
                    if not (k == self.levels - 1 and t == self.steps_per_level - 1):
                        x = x + math.sqrt(2 * a) * randn(shape, generator=generator, device=x.device, dtype=x.dtype)
                    x = self.check(x, k)
            record(k, x, last=k == self.levels - 1)
        return PosteriorSamples(problem.fold(x), None, nfe=self.denoiser.nfe)
