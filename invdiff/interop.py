r"""Running deepinv's diffusion algorithms on invdiff priors whose data are not in [0, 1].

deepinv's :class:`~deepinv.sampling.DiffPIR` assumes images in :math:`[0, 1]`: it maps the iterate
to :math:`[-1, 1]`, calls the denoiser on :math:`(x + 1)/2` at :math:`\sigma/2`, and clamps the
denoised estimate to :math:`[-1, 1]`, i.e. the image to :math:`[0, 1]`. On data with another range
(complex MRI images stored as real and imaginary channels lie in :math:`[-1, 1]`) the clamp
deletes every negative value and the result is wrong whatever the prior. A deepinv user rescales
the problem; :func:`unit_range` does it exactly. With :math:`x = \ell + c\,u`,
:math:`c = h - \ell` for data in :math:`[\ell, h]`,

.. math::
    D_u(u, s) &= \big(D(\ell + c\,u,\; c\,s) - \ell\big) / c, \\
    A_u\,u &= c\,A u, \qquad y_u = y - A(\ell \mathbf 1), \qquad
    \operatorname{prox}^{A_u}_{\gamma}(z; y_u) = \operatorname{prox}^{A}_{\gamma c^2}(c\,z; y_u) / c,

so :math:`A_u u = A x - A(\ell\mathbf 1)` and :math:`y_u = A_u u + \text{noise}` holds with the same
noise (the measurement scale is unchanged). The proximal map reuses the operator's own
:meth:`prox_l2` (closed form where it has one), through the substitution :math:`x' = c\,u`.

Example: deepinv's DiffPIR on data in [-1, 1]

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> prior, physics = Gaussian(torch.zeros(4), 0.25), Matrix(torch.eye(4)[:2], sigma=0.01)
>>> run = deepinv_diffpir(prior, sigma=0.01, steps=10, data_range=(-1.0, 1.0))
>>> run(physics(torch.full((1, 4), -0.3)), physics).shape
torch.Size([1, 4])
"""
from __future__ import annotations

import math

import torch

__all__ = ["UnitRangeDenoiser", "unit_range_physics", "unit_range", "deepinv_diffpir", "deepinv_dps"]


def _scale(data_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range: expected (low, high), got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range: expected finite low < high, got {data_range!r}")
    return lo, hi - lo


class UnitRangeDenoiser(torch.nn.Module):
    """:math:`D_u(u, s) = (D(\\ell + c u, c s) - \\ell) / c` (module docstring): the denoiser of the
    data mapped from ``data_range`` to [0, 1]."""

    def __init__(self, prior, data_range=(0.0, 1.0)) -> None:
        super().__init__()
        self.prior = prior
        self.lo, self.c = _scale(data_range)

    def forward(self, u: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        return (self.prior(self.lo + self.c * u, self.c * sigma) - self.lo) / self.c


def unit_range_physics(physics, data_range=(0.0, 1.0)):
    """The linear operator :math:`A_u = c A` of the data mapped to [0, 1], as a deepinv
    ``LinearPhysics`` whose ``prox_l2`` is ``physics.prox_l2`` after the substitution
    :math:`x' = c u` (module docstring)."""
    import deepinv as dinv

    if not isinstance(physics, dinv.physics.LinearPhysics):
        raise TypeError(f"unit_range_physics: expected a linear operator (deepinv LinearPhysics), got {type(physics).__name__}")
    _, c = _scale(data_range)

    class _UnitRange(dinv.physics.LinearPhysics):
        def A(self, u, *args, **kwargs):
            return c * physics.A(u)

        def A_adjoint(self, v, *args, **kwargs):
            return c * physics.A_adjoint(v)

        def prox_l2(self, z, y, gamma, *args, **kwargs):
            return physics.prox_l2(c * z, y, gamma * c * c) / c

    return _UnitRange(noise_model=physics.noise_model)


def unit_range(prior, physics, y: torch.Tensor, data_range=(0.0, 1.0)):
    """``(denoiser, physics, y)`` of the problem in the variable :math:`u = (x - \\ell)/c \\in [0, 1]`;
    map a result back with ``x = low + (high - low) * u``."""
    lo, _ = _scale(data_range)
    shape = getattr(physics, "x_shape", None)
    if shape is None:
        raise ValueError("unit_range: the operator must say its signal shape (x_shape)")
    x_lo = torch.full((1, *shape), lo, device=y.device, dtype=y.dtype)
    return UnitRangeDenoiser(prior, data_range), unit_range_physics(physics, data_range), y - physics.A(x_lo)


def deepinv_diffpir(prior, sigma: float, steps: int, data_range=(0.0, 1.0), **kwargs):
    """deepinv's DiffPIR on ``prior`` for data in ``data_range``: a function ``(y, physics) -> x``.

    For ``data_range=(0, 1)`` it is ``dinv.sampling.DiffPIR(prior, L2(), sigma, max_iter=steps)``
    itself; otherwise the problem is mapped to [0, 1] by :func:`unit_range` and the result mapped
    back. ``kwargs`` go to DiffPIR (``zeta``, ``lambda_``, ...). DiffPIR draws its noise from
    torch's global generator: seed it (``torch.manual_seed``) for a repeatable run.
    """
    import deepinv as dinv

    lo, c = _scale(data_range)

    def run(y: torch.Tensor, physics) -> torch.Tensor:
        if (lo, c) == (0.0, 1.0):
            den, phys, y_u = prior, physics, y
        else:
            den, phys, y_u = unit_range(prior, physics, y, data_range)
        algo = dinv.sampling.DiffPIR(den, dinv.optim.L2(), sigma=sigma, max_iter=steps, verbose=False, **kwargs)
        with torch.no_grad():
            return lo + c * algo(y_u, phys)

    return run


def deepinv_dps(prior, steps: int, **kwargs):
    """deepinv's DPS on ``prior`` (float32, ``steps`` steps, ``kwargs`` such as ``weight``): a function
    ``(y, physics, seed) -> x``. It gets its own generator, so ``seed`` is honoured (without one deepinv
    ignores the seed with a warning and draws from torch's global generator)."""
    import deepinv as dinv

    dps = dinv.sampling.DPS(prior, num_steps=steps, dtype=torch.float32, verbose=False, rng=torch.Generator(), **kwargs)

    def run(y: torch.Tensor, physics, seed: int) -> torch.Tensor:
        return dps(y, physics, x_init=None, seed=int(seed)).detach()

    return run
