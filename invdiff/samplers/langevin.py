r"""Pieces shared by the samplers that run Langevin / MALA moves (DAPS, adaptive SMC).

- :func:`likelihood_curvature`: an upper estimate :math:`L_y` of the largest eigenvalue of the
  Hessian of the negative log-likelihood,
  :math:`L_y = \|J_{\mathcal A}\|_2^2 \,\max_j v_j^{-1}` (spectral norm of the operator, or of its
  Jacobian at a point for a nonlinear operator, times the largest precision). A gradient step
  :math:`h < 2 / (L_y + 1/r^2)` on :math:`\|x - m\|^2/(2r^2) + \mathrm{nll}(x)` is stable; the
  samplers choose their default step sizes from it, so no step size needs tuning.
- :func:`log_density_ratio`: :math:`\log p(x') - \log p(x)` from the score alone, by the
  trapezoidal rule along the segment (exact for Gaussian densities, whose score is affine):

  .. math:: \log p(x') - \log p(x) \approx \tfrac12 \big(s(x) + s(x')\big) \cdot (x' - x).

  MALA over a diffusion prior needs it, since the denoiser gives the score
  :math:`s = (D(x, \sigma) - x)/\sigma^2` but not the density.
- :func:`mala_log_q`: the log-density of the MALA proposal
  :math:`x' \sim \mathcal N(x + h \nabla \log \pi(x), 2h I)` (up to a constant).

>>> import torch
>>> x, x2 = torch.zeros(1, 3), torch.ones(1, 3)
>>> float(log_density_ratio(x, x2, -x, -x2))        # N(0, I): log p(1) - log p(0) = -3/2
-1.5
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["likelihood_curvature", "log_density_ratio", "mala_log_q", "rowdot"]


def rowdot(a: Tensor, b: Tensor) -> Tensor:
    """Inner product per row, ``(n,)``."""
    return (a * b).flatten(1).sum(1)


def log_density_ratio(x: Tensor, x_new: Tensor, score: Tensor, score_new: Tensor) -> Tensor:
    """:math:`\\log p(x') - \\log p(x)` per row by the trapezoidal rule (module docstring)."""
    return 0.5 * rowdot(score + score_new, x_new - x)


def mala_log_q(x_to: Tensor, x_from: Tensor, grad_from: Tensor, h: float) -> Tensor:
    """:math:`\\log \\mathcal N(x_{to};\\, x_{from} + h g_{from},\\, 2h I)` per row, without the constant
    (which cancels in the MH ratio when ``h`` is the same both ways)."""
    d = x_to - x_from - h * grad_from
    return -rowdot(d, d) / (4 * h)


def likelihood_curvature(problem, n_iter: int = 30, generator: torch.Generator | None = None) -> float:
    """:math:`L_y = \\|J\\|_2^2 \\max_j v_j^{-1}` for the problem's operator and likelihood (module docstring).

    Linear operators (``A_adjoint``) use :func:`invdiff.operators.base.power_norm` (seeded); others
    power-iterate :math:`J^\\top J` at the operator's baseline of ``y`` with a Jacobian-vector and
    a vector-Jacobian product per iteration (the JVP by central differences where the operator
    has no forward-mode derivative).
    """
    lik, y = problem.likelihood, problem.y
    prec = float((1.0 / lik.variance(y).expand_as(y)).max())
    physics = problem.physics
    if hasattr(physics, "A_adjoint"):
        from invdiff.operators.base import power_norm

        try:
            norm2 = power_norm(physics, problem.x_shape, n_iter=n_iter, tol=1e-3, dtype=problem.dtype,
                               device=problem.device) ** 2
            return norm2 * prec
        except (AttributeError, NotImplementedError, RuntimeError):
            pass
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x0 = problem.baseline()[:1].detach()
    v = torch.randn((1, *problem.x_shape), generator=g, dtype=problem.dtype).to(problem.device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(n_iter):
        try:
            _, jv = torch.func.jvp(physics.A, (x0,), (v,))
        except RuntimeError:  # an autograd.Function without forward AD (e.g. the PDE solvers' adjoints)
            eps = 1e-3 * float(x0.norm().clamp_min(1.0))
            with torch.no_grad():
                jv = (physics.A(x0 + eps * v) - physics.A(x0 - eps * v)) / (2 * eps)
        xg = x0.detach().requires_grad_()
        (w,) = torch.autograd.grad(physics.A(xg), xg, jv)
        new = float(w.norm())
        if new == 0.0:
            break
        v, done, lam = w / new, abs(new - lam) <= 1e-3 * new, new
        if done:
            break
    return lam * prec
