r"""One guided step: the gradient of the data fit at :math:`\hat x_0 = D(x, \sigma)` with respect to
the noisy iterate :math:`x`, through the denoiser (one vector-Jacobian product).

.. math::
    g = \nabla_x \|y - \mathcal A(D(x, \sigma))\|_\Lambda \quad (\text{``"norm"``, DPS's rule}),
    \qquad
    g = \nabla_x\, w\, \tfrac12 \|r(D(x, \sigma))\|^2 \quad (\text{``"squared"``}),

per row of ``x`` (the sum over rows of per-row losses has per-row gradients), with
:math:`r` the likelihood's whitened residual and :math:`w` an optional per-row weight. DPS
(Chung et al. 2023) uses it with ``"norm"``; twisted SMC (TDS, Wu et al. 2023) with
``"squared"`` and :math:`w = -\sigma_y^2 / (\sigma_y^2 + \kappa_\sigma)` (the gradient of its log
twisting function); any later guidance should use it too.

The loss depends on ``x`` only through the residual, whose cotangent is in closed form
(:math:`r / \|r\|` for the norm, :math:`w\, r` for the square), so autograd runs only through
the operator and the denoiser, not through the norm.

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> from invdiff.samplers.problem import make_problem
>>> problem = make_problem(torch.ones(1, 1), Matrix(torch.eye(2)[:1], sigma=0.1))
>>> x0_hat, g, sq = guided_grad(Gaussian(torch.zeros(2), 1.0), torch.zeros(1, 2), 1.0, problem)
>>> g.shape, float(sq)                      # ||y - A D(0, 1)||^2 = 1
(torch.Size([1, 2]), 1.0)
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["guided_grad", "Guidance"]

Guidance = Literal["norm", "squared"]


def guided_grad(denoiser, x: Tensor, sigma: float | Tensor, problem, guidance: Guidance = "norm",
                clip_x0: tuple[float, float] | None = None,
                weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(x0_hat, grad, sq)``, all detached: the denoiser's estimate, the gradient above and the
    squared norm (per row) of the residual that was differentiated.

    :param denoiser: ``D(x, sigma)`` (conditions, if any, are bound by the caller).
    :param sigma: a float or an ``(n,)`` tensor, passed to the denoiser as is.
    :param problem: a :class:`~invdiff.samplers.problem.Problem` (``y``, ``physics``, likelihood).
    :param guidance: ``"norm"`` (the likelihood's :meth:`norm_residual`, not squared; a zero
        residual gives a zero gradient) or ``"squared"`` (the whitened residual, squared, halved).
    :param clip_x0: clamp :math:`\\hat x_0` to ``(low, high)`` before the data fit.
    :param weight: ``(n,)`` weights of the squared loss per row (``"squared"`` only).
    """
    lik = problem.likelihood
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0_hat = denoiser(x_in, sigma)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(*clip_x0)
        z = problem.physics.A(x0_hat)
        r = lik.norm_residual(problem.y, z) if guidance == "norm" else lik.residual(problem.y, z)
    r_d = r.detach()
    sq = r_d.pow(2).flatten(1).sum(1)
    shape = (-1, *([1] * (r_d.ndim - 1)))
    if guidance == "norm":  # d ||r|| / dr = 2 r / (2 ||r||), the norm floored at tiny
        tiny = torch.finfo(sq.dtype).tiny
        w = torch.where(sq >= tiny, 1.0 / (2 * sq.clamp_min(tiny).sqrt()), 0.0)
        cotangent = w.reshape(shape) * (2 * r_d)
    elif weight is None:  # d ||r||^2 / 2 / dr = r
        cotangent = r_d
    else:
        cotangent = weight.reshape(shape) * r_d
    (grad,) = torch.autograd.grad(r, x_in, grad_outputs=cotangent)
    return x0_hat.detach(), grad, sq
