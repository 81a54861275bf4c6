r"""Diffusion channel estimators: a DiffPace-style deterministic plug-and-play ODE and annealed Langevin.

Both take a prior ``D(x, sigma) = E[x0 | x0 + sigma eps = x]`` over channels ``(B, 2, Nr, Nt)``
and a linear physics ``y = A x + n`` with Gaussian noise of standard deviation ``sigma_y`` per
(real, imag) channel (complex variance :math:`\sigma_n^2 = 2\sigma_y^2`).

**Plug-and-play ODE** (DiffPace, Hu, Han, Gerstacker, Schober 2025: the diffusion prior used
plug-and-play inside a deterministic ODE sampler; the data step here is the exact proximal
step of DiffPIR, Zhu et al. 2023, with its stochastic part switched off). On noise levels
:math:`\sigma_0 > \dots > \sigma_{K-1} > \sigma_K = 0` (Karras et al.):

.. math::
    \hat x_0 &= D(x_k, \sigma_k), \\
    \tilde x_0 &= \arg\min_x \frac{1}{2\sigma_y^2}\|Ax - y\|^2 + \frac{\lambda}{2\sigma_k^2}\|x - \hat x_0\|^2, \\
    x_{k+1} &= \tilde x_0 + \frac{\sigma_{k+1}}{\sigma_k}(x_k - \tilde x_0)

(the DDIM / Euler step of the probability-flow ODE with the corrected :math:`\tilde x_0`). It
is deterministic given its start :math:`x_0 = x_{init} + \sigma_0 \varepsilon` (seeded), and costs
one network evaluation per step. The proximal step is exact: ``physics.prox_l2`` (an
eigen-decomposition for :class:`~invdiff.operators.channel.HybridBeamforming`).

**Annealed Langevin** (score-based channel estimation, Arvinte and Tamir 2022, after Song and
Ermon 2019 and Jalal et al. 2021): on geometric levels :math:`\sigma_1 > \dots > \sigma_L`,
``T`` steps per level with step :math:`a_k = \epsilon\,\sigma_k^2/\sigma_L^2`,

.. math::
    x \leftarrow x + a_k\Bigl(\frac{D(x,\sigma_k) - x}{\sigma_k^2}
    + \frac{A^\top(y - Ax)}{\sigma_y^2 + \sigma_k^2}\Bigr) + \sqrt{2 a_k}\, z .

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators.matrix import Matrix
>>> prior = Gaussian(torch.zeros(4), 1.0); A = Matrix(torch.eye(4))
>>> x, nfe = pnp_ode(prior, torch.ones(1, 4), A, sigma_y=0.1, steps=5, generator=torch.Generator().manual_seed(0))
>>> x.shape, nfe
(torch.Size([1, 4]), 5)
"""
from __future__ import annotations

import math

import torch

from invdiff.diffusion.schedules import karras_sigmas
from invdiff.utils.random import randn

__all__ = ["pnp_ode", "annealed_langevin"]


def _prox(physics, z: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    r""":math:`\arg\min_x \frac{\gamma}{2}\|Ax-y\|^2 + \frac12\|x-z\|^2` (exact where the physics offers it)."""
    return physics.prox_l2(z, y, gamma)


def pnp_ode(
    prior,
    y: torch.Tensor,
    physics,
    sigma_y: float,
    steps: int = 20,
    sigma_max: float = 5.0,
    sigma_min: float = 0.002,
    rho: float = 7.0,
    lam: float = 1.0,
    x_init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    r"""DiffPace-style deterministic plug-and-play ODE estimate (module docstring); returns ``(x, nfe)``.

    :param sigma_max: the first noise level :math:`\sigma_0` (lower it and pass ``x_init``, e.g.
        the LMMSE estimate, to start part-way down the trajectory).
    :param lam: weight :math:`\lambda` of the prior term in the proximal step.
    """
    if sigma_y <= 0:
        raise ValueError(f"sigma_y: expected > 0, got {sigma_y}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    sig = karras_sigmas(steps, sigma_min, sigma_max, rho)
    shape = (y.shape[0], *physics.x_shape)
    x0 = torch.zeros(shape, dtype=y.dtype, device=y.device) if x_init is None else x_init
    x = x0 + sig[0].item() * randn(shape, generator=generator, device=y.device, dtype=y.dtype)
    xt = x
    with torch.no_grad():
        for k in range(steps):
            s, s_next = float(sig[k]), float(sig[k + 1])
            x0_hat = prior(x, torch.full((shape[0],), s, dtype=y.dtype, device=y.device))
            # gamma = (sigma_k^2 / lambda) / sigma_y^2 in deepinv's prox convention
            xt = _prox(physics, x0_hat, y, s**2 / (lam * sigma_y**2))
            x = xt + (s_next / s) * (x - xt)
    return xt, steps


def annealed_langevin(
    prior,
    y: torch.Tensor,
    physics,
    sigma_y: float,
    levels: int = 200,
    steps_per_level: int = 3,
    sigma_max: float = 5.0,
    sigma_min: float = 0.01,
    eps: float = 5e-5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    r"""Annealed Langevin posterior sampling (Arvinte and Tamir 2022; module docstring).

    Returns the last iterate and the network evaluations ``levels * steps_per_level``.
    """
    if sigma_y <= 0:
        raise ValueError(f"sigma_y: expected > 0, got {sigma_y}")
    sig = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64))
    shape = (y.shape[0], *physics.x_shape)
    x = sigma_max * randn(shape, generator=generator, device=y.device, dtype=y.dtype)
    with torch.no_grad():
        for k in range(levels):
            s = float(sig[k])
            a = eps * s**2 / sigma_min**2
            st = torch.full((shape[0],), s, dtype=y.dtype, device=y.device)
            for t in range(steps_per_level):
                score = (prior(x, st) - x) / s**2
                lik = physics.A_adjoint(y - physics.A(x)) / (sigma_y**2 + s**2)
                x = x + a * (score + lik)
                last = k == levels - 1 and t == steps_per_level - 1
                if not last:
                    x = x + math.sqrt(2 * a) * randn(shape, generator=generator, device=y.device, dtype=y.dtype)
    return x, levels * steps_per_level
