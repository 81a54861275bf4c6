r"""Data-consistency steps for the hook of the shared loop (:mod:`invdiff.samplers.loop`).

:func:`conjugate_gradient` solves a symmetric positive (semi-)definite system row by row (each
row of the batch is its own problem: its own step sizes, no coupling between samples).
:func:`data_consistency_cg` uses it for the regularised least-squares step of DDS (Chung, Lee
& Ye 2024) and DiffPIR-like samplers, with the likelihood's variance as the weight:

.. math::
    \hat x_0' = \arg\min_x \tfrac12 \|y - A x\|^2_{V^{-1}} + \frac{1}{2 v} \|x - \hat x_0\|^2
    \iff (A^\top V^{-1} A + v^{-1} I)\, x = A^\top V^{-1} y + v^{-1} \hat x_0,

approximated by ``iters`` conjugate-gradient steps started at :math:`\hat x_0`, i.e. in the
Krylov subspace :math:`\hat x_0 + \mathcal K_M`; ``v = inf`` is DDS's plain
:math:`A^\top A x = A^\top y` with early stopping as the regulariser.

:func:`gaussian_draw_cg` draws from the Gaussian whose mean that step computes,
:math:`\mathcal N(m, P^{-1})` with :math:`P = A^\top V^{-1} A + v^{-1} I` (the posterior of
:math:`x \sim \mathcal N(\hat x_0, v I)` given :math:`y = A x + V^{1/2} n`), by perturb-and-MAP
(Papandreou & Yuille 2010): the same solve with data and prior mean perturbed by their own noise,

.. math::
    P\, \tilde x = A^\top V^{-1} (y + V^{1/2} \xi_1) + v^{-1} (\hat x_0 + \sqrt v\, \xi_2),
    \qquad \xi_1, \xi_2 \sim \mathcal N(0, I),

exact when the CG converges (:math:`\tilde x` is then Gaussian with mean :math:`m` and
covariance :math:`P^{-1} (A^\top V^{-1} A + v^{-1} I) P^{-1} = P^{-1}`).

>>> A = torch.diag(torch.tensor([1.0, 2.0]))
>>> x = conjugate_gradient(lambda u: u @ A.T @ A, torch.tensor([[1.0, 4.0]]), torch.zeros(1, 2), iters=2)
>>> x.round(decimals=4).tolist()
[[1.0, 1.0]]
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from invdiff.utils.random import randn

__all__ = ["conjugate_gradient", "data_consistency_cg", "gaussian_draw_cg"]


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.ndim - 1)))


def conjugate_gradient(apply: Callable[[Tensor], Tensor], b: Tensor, x0: Tensor, iters: int,
                       tol: float = 0.0) -> Tensor:
    """``iters`` CG steps on ``apply(x) = b`` from ``x0``, per row (rows whose residual norm
    falls below ``tol * ||b||`` stop moving)."""
    x = x0
    r = b - apply(x)
    p = r
    rs = _rowdot(r, r)
    stop = tol * _rowdot(b, b)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(iters):
        Ap = apply(p)
        active = (rs > stop).to(b.dtype)
        alpha = active * rs / _rowdot(p, Ap).clamp_min(tiny)
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = _rowdot(r, r)
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return x


def _linear(physics):
    if not hasattr(physics, "A_adjoint"):
        raise ValueError(f"conjugate-gradient data consistency needs a linear operator (A_adjoint), "
                         f"got {type(physics).__name__}")
    return physics


def data_consistency_cg(problem, x0_hat: Tensor, iters: int, v: float = math.inf) -> Tensor:
    """The regularised least-squares step of the module docstring, ``iters`` CG steps.

    Needs a linear operator (``physics.A_adjoint``); the weight :math:`V` is the likelihood's
    variance at ``y`` (:meth:`invdiff.samplers.likelihood.Likelihood.variance`).
    """
    physics = _linear(problem.physics)
    var = problem.likelihood.variance(problem.y)
    prec = 0.0 if math.isinf(v) else 1.0 / v

    def apply(u: Tensor) -> Tensor:
        out = physics.A_adjoint(physics.A(u) / var)
        return out + prec * u if prec > 0 else out

    b = physics.A_adjoint(problem.y / var)
    if prec > 0:
        b = b + prec * x0_hat
    with torch.no_grad():
        return conjugate_gradient(apply, b, x0_hat, iters)


def gaussian_draw_cg(problem, x0_hat: Tensor, v: float, iters: int, generator=None, tol: float = 0.0) -> Tensor:
    """Perturb-and-MAP draw from :math:`\\mathcal N(m, P^{-1})` (module docstring): ``iters`` CG steps
    (a row stops once its residual is below ``tol`` times the right-hand side) started at the perturbed prior mean
    :math:`\\hat x_0 + \\sqrt v\\, \\xi_2`; ``v`` a float > 0. Needs a linear operator and a Gaussian
    likelihood (its variance :math:`V` at ``y``)."""
    physics, var = _linear(problem.physics), torch.as_tensor(problem.likelihood.variance(problem.y))
    start = x0_hat + math.sqrt(v) * randn(x0_hat.shape, generator, x0_hat.device, x0_hat.dtype)
    y = problem.y + var.sqrt() * randn(problem.y.shape, generator, x0_hat.device, x0_hat.dtype)

    def apply(u: Tensor) -> Tensor:
        return physics.A_adjoint(physics.A(u) / var) + u / v

    with torch.no_grad():
        return conjugate_gradient(apply, physics.A_adjoint(y / var) + start / v, start, iters, tol**2)
