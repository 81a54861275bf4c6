r"""Exact Gaussian products for linear-Gaussian SMC moves: :math:`\mathcal N(m, T I)` times
:math:`\mathcal N(y; A x, v I)`, the product's draw and its normaliser.

Two routes: the SVD of a dense ``A`` (:class:`SVDProduct`, no solves, any ``T >= 0``) and any
deepinv ``LinearPhysics`` through ``physics.prox_l2`` (:class:`ProxProduct`, conjugate gradients
or the operator's own closed form). Both need a likelihood with one noise level per measurement
(:meth:`invdiff.samplers.likelihood.Likelihood.row_sigma`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.utils.random import randn

__all__ = ["SVDProduct", "ProxProduct"]


class SVDProduct:
    """Gaussian product and normaliser for a dense ``A = U diag(s) V^T`` (no solves, any ``T >= 0``).

    Called with the measurement ``y`` (n, m) and ``scale``: the noise variance is
    ``scale * sigma_y^2`` (``scale`` a float shared by all rows). ``randn(shape, generator,
    device, dtype)`` draws the noise (a :class:`~invdiff.distributed.ParticleShard`'s for
    particles sharded over ranks).
    """

    def __init__(self, matrix: Tensor, problem, randn=randn) -> None:
        self.randn = randn
        A = matrix.to(problem.device, torch.float64)
        U, s, Vh = torch.linalg.svd(A, full_matrices=False)
        dt = problem.dtype
        self.U, self.s, self.Vh, self.A = U.to(dt), s.to(dt), Vh.to(dt), A.to(dt)
        self.sy2 = problem.sigma_y.reshape(-1, 1) ** 2  # (n, 1)

    def __call__(self, m: Tensor, T: float, y: Tensor, scale: float = 1.0, generator=None,
                 draw: bool = True) -> tuple[Tensor | None, Tensor]:
        """``(x ~ N(m, T I) N(y; A x, v I), log N(y; A m, v I + T A A^T) + c)``, ``v = scale sigma_y^2``."""
        shape = m.shape
        m = m.reshape(shape[0], -1)
        v = scale * self.sy2  # (n, 1)
        r = y - m @ self.A.T  # (n, m)
        ur = r @ self.U  # (n, r)
        perp = r - ur @ self.U.T
        den = v + T * self.s**2  # (n, r)
        quad = (perp * perp).sum(1) / v[:, 0] + (ur * ur / den).sum(1)
        if not draw:
            return None, -0.5 * quad
        x = m + (ur * (T * self.s / den)) @ self.Vh
        if T > 0:
            z = self.randn(m.shape, generator, m.device, m.dtype)
            gain = (T * v / den).sqrt() - math.sqrt(T)  # (n, r)
            x = x + math.sqrt(T) * z + ((z @ self.Vh.T) * gain) @ self.Vh
        return x.reshape(shape), -0.5 * quad


class ProxProduct:
    r"""The same for any deepinv ``LinearPhysics``, by ``physics.prox_l2`` (CG, or its own SVD).

    .. math::
        \hat x = \arg\min_x \frac{\|y - A x\|^2}{2v} + \frac{\|x - m\|^2}{2T}
        = \mathrm{prox}_{l2}(m, y, T / v), \qquad
        (y - A m)^\top (v I + T A A^\top)^{-1} (y - A m)
        = \frac{\|y - A\hat x\|^2}{v} + \frac{\|\hat x - m\|^2}{T},

    and a draw is :math:`\hat x` plus the same solve applied to noise (perturb-and-MAP);
    ``randn`` as in :class:`SVDProduct`.
    """

    def __init__(self, problem, randn=randn) -> None:
        self.randn = randn
        self.problem = problem
        self.sy2 = problem.sigma_y**2  # (n, 1, ..., 1) on the measurement side
        flat = self.sy2.flatten()
        self.uniform = bool((flat == flat[0]).all())

    def __call__(self, m: Tensor, T: float, y: Tensor, scale: float = 1.0, generator=None,
                 draw: bool = True) -> tuple[Tensor | None, Tensor]:
        physics = self.problem.physics
        v = scale * self.sy2

        def nll(x: Tensor) -> Tensor:
            return 0.5 * ((y - physics.A(x)) ** 2 / v).flatten(1).sum(1)

        if T == 0:
            return m, -nll(m)
        gamma = T / v.flatten()[0] if self.uniform else T / v
        mean = physics.prox_l2(m, y, gamma)
        log_z = -nll(mean) - 0.5 * ((mean - m) ** 2).flatten(1).sum(1) / T
        if not draw:
            return None, log_z
        z = self.randn(m.shape, generator, m.device, m.dtype)
        zy = self.randn(y.shape, generator, m.device, m.dtype) * v.sqrt()
        return mean + physics.prox_l2(math.sqrt(T) * z, zy, gamma), log_z
