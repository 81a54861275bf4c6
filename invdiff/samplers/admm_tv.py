r"""ADMM for total-variation-regularised least squares: the data-consistency step of
DiffusionMBIR (Chung et al., CVPR 2023) and the 3D TV baseline.

.. math::
    \min_x \tfrac12 \|A x - y\|_2^2 + \lambda \|D x\|_1
    \quad\Longleftrightarrow\quad
    \min_{x, z} \tfrac12 \|A x - y\|_2^2 + \lambda \|z\|_1 \ \text{ s.t. } D x = z,

with :math:`D` the forward differences along ``z`` (:math:`D_z`, DiffusionMBIR's default) or
along all axes (anisotropic 3D TV, :class:`invdiff.operators.finite_difference.FiniteDifference`).
One iteration (scaled dual :math:`u`, penalty :math:`\rho`):

.. math::
    x &\leftarrow \mathrm{CG}_M\big(A^\top A + \rho D^\top D + p I,\;
        A^\top y + \rho D^\top (z - u) + p\, x_{ref};\; x\big) \\
    z &\leftarrow \mathcal S_{\lambda/\rho}(D x + u), \qquad
        \mathcal S_t(v) = \operatorname{sign}(v) \max(|v| - t, 0) \\
    u &\leftarrow u + D x - z

(``M`` conjugate-gradient steps warm-started at the current :math:`x`, per row of the batch:
:func:`invdiff.samplers.consistency.conjugate_gradient`). The optional proximal weight :math:`p`
pulls towards a reference :math:`x_{ref}` (0 in DiffusionMBIR and in the TV baseline).

Scaling: the data term is the plain :math:`\tfrac12\|Ax - y\|^2` of the paper (not whitened by
the noise level), so :math:`\lambda` is in units of :math:`\|A\|^2 \times` (data range); invdiff's
CT and MRI operators have :math:`\|A\| = 1` and volumes in [0, 1], so :math:`\lambda` is the TV
weight per unit of intensity. :math:`\rho` only changes the speed of ADMM, not its fixed point;
with a few CG steps per iteration, :math:`\rho \|D\|^2 \gg \|A\|^2` makes the x-update mostly a
smoothing of :math:`x` along the difference axes.

>>> import torch
>>> from invdiff.operators.volume3d import SliceMaskMRI
>>> op = SliceMaskMRI(torch.ones(4, 8, 8))
>>> x = torch.zeros(1, 2, 4, 8, 8); x[:, 0, :, 2:6, 2:6] = 1
>>> x_tv, _ = tv_reconstruct(op.A(x), op, lam=0.01, iters=20)
>>> bool((x_tv - x).abs().max() < 0.05)
True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.samplers.consistency import conjugate_gradient

__all__ = ["soft_threshold", "TVADMM", "tv_objective", "tv_reconstruct"]


def soft_threshold(v: Tensor, t: float) -> Tensor:
    r""":math:`\mathcal S_t(v) = \operatorname{sign}(v) \max(|v| - t, 0)`, the prox of :math:`t\|\cdot\|_1`."""
    return torch.sign(v) * (v.abs() - t).clamp_min(0)


def difference_operator(axes) -> "object":
    """The stacked forward differences along ``axes`` (a ``FiniteDifference``)."""
    from invdiff.operators.finite_difference import FiniteDifference

    return FiniteDifference(tuple(axes))


@dataclass
class TVADMM:
    r"""The ADMM iteration of the module docstring for one measurement batch.

    :param physics: a linear operator (``A``, ``A_adjoint``).
    :param y: measurements ``(B, *y_shape)``.
    :param lam: :math:`\lambda`, the weight of :math:`\|Dx\|_1`. :param rho: the ADMM penalty.
    :param axes: difference axes of ``(B, C, D, H, W)``: ``(2,)`` (z only) or ``(2, 3, 4)``.
    :param cg_iters: conjugate-gradient steps of the x-update.
    :param weight: optional data weights :math:`w` (broadcastable to ``y``): the data term becomes
        :math:`\tfrac12 \|A x - y\|_W^2` (e.g. the relative precision of the measurements).
    """

    physics: object
    y: Tensor
    lam: float = 0.04
    rho: float = 10.0
    axes: tuple[int, ...] = (2,)
    cg_iters: int = 5
    weight: Tensor | None = None

    def __post_init__(self) -> None:
        if not hasattr(self.physics, "A_adjoint"):
            raise ValueError(f"ADMM needs a linear operator (A_adjoint), got {type(self.physics).__name__}")
        if not (self.lam >= 0 and self.rho > 0):
            raise ValueError(f"expected lam >= 0 and rho > 0, got lam={self.lam}, rho={self.rho}")
        if not isinstance(self.cg_iters, int) or self.cg_iters < 1:
            raise ValueError(f"cg_iters: expected an int >= 1, got {self.cg_iters!r}")
        self.D = difference_operator(self.axes)
        self.Aty = self.physics.A_adjoint(self.y if self.weight is None else self.weight * self.y)

    def init(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Initial ``(z, u) = (D x, 0)``."""
        z = self.D.A(x)
        return z, torch.zeros_like(z)

    def x_update(self, x: Tensor, z: Tensor, u: Tensor, prox=0.0, x_ref: Tensor | None = None) -> Tensor:
        r"""The CG x-update of the module docstring (``prox``: the weight :math:`p` of
        :math:`\tfrac p2\|x - x_{ref}\|^2`, a float or a per-row tensor broadcastable to ``x``)."""
        A, D, rho, w = self.physics, self.D, self.rho, self.weight
        has_prox = isinstance(prox, Tensor) or prox > 0

        def normal(v: Tensor) -> Tensor:
            Av = A.A(v) if w is None else w * A.A(v)
            out = A.A_adjoint(Av) + rho * D.A_adjoint(D.A(v))
            return out + prox * v if has_prox else out

        b = self.Aty + rho * D.A_adjoint(z - u)
        if has_prox:
            b = b + prox * x_ref
        with torch.no_grad():
            return conjugate_gradient(normal, b, x, self.cg_iters)

    def zu_update(self, x: Tensor, z: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The soft-threshold z-update and the dual update at ``x``."""
        with torch.no_grad():
            Dx = self.D.A(x)
            z = soft_threshold(Dx + u, self.lam / self.rho)
            return z, u + Dx - z

    def step(self, x: Tensor, z: Tensor, u: Tensor, prox=0.0, x_ref: Tensor | None = None):
        """One ADMM iteration (x, then z and u): returns the new ``(x, z, u)``."""
        x = self.x_update(x, z, u, prox, x_ref)
        z, u = self.zu_update(x, z, u)
        return x, z, u

    def objective(self, x: Tensor) -> Tensor:
        """:math:`\\tfrac12\\|Ax - y\\|^2 + \\lambda\\|Dx\\|_1` per row."""
        return tv_objective(x, self.physics, self.y, self.lam, self.D)


def tv_objective(x: Tensor, physics, y: Tensor, lam: float, D) -> Tensor:
    r""":math:`\tfrac12\|Ax - y\|^2 + \lambda\|Dx\|_1` per row of the batch."""
    r = (physics.A(x) - y).flatten(1)
    return 0.5 * (r * r).sum(1) + lam * D.A(x).abs().flatten(1).sum(1)


def tv_reconstruct(y: Tensor, physics, lam: float = 0.04, rho: float = 10.0, axes=(2, 3, 4), iters: int = 100,
                   cg_iters: int = 5, x0: Tensor | None = None) -> tuple[Tensor, list[float]]:
    r"""The 3D TV reconstruction :math:`\arg\min_x \tfrac12\|Ax - y\|^2 + \lambda\|Dx\|_1` by ``iters``
    ADMM iterations (module docstring) from ``x0`` (default: ``physics.baseline(y)`` if it has one,
    else :math:`A^\top y`). Returns ``(x, objective per iteration summed over the batch)``."""
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters: expected an int >= 1, got {iters!r}")
    admm = TVADMM(physics, y, float(lam), float(rho), tuple(axes), cg_iters)
    if x0 is None:
        try:
            x0 = physics.baseline(y)
        except (AttributeError, NotImplementedError):
            x0 = admm.Aty
    x = x0
    z, u = admm.init(x)
    history = []
    for _ in range(iters):
        x, z, u = admm.step(x, z, u)
        history.append(float(admm.objective(x).sum()))
    return x, history
