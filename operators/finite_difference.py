r"""Forward differences of volumes along chosen axes: :math:`D_z` of DiffusionMBIR and 3D TV.

For a volume :math:`x` of shape ``(B, C, D, H, W)`` and a spatial axis :math:`k`,

.. math::
    (D_k x)_i = \begin{cases} x_{i+1} - x_i & i < N_k - 1 \\ 0 & i = N_k - 1 \end{cases}
    \qquad
    (D_k^\top g)_i = g_{i-1}\,[i > 0] - g_i\,[i < N_k - 1]

(Neumann boundary: the last difference is zero, so constants are in the null space and
:math:`\|D_k\|_2 < 2`). :class:`FiniteDifference` stacks :math:`D_k` over ``axes`` into
``(B, len(axes), C, D, H, W)``: ``axes=(2,)`` is :math:`D_z` (DiffusionMBIR's z-TV, Chung et al.
CVPR 2023), ``axes=(2, 3, 4)`` the anisotropic 3D TV :math:`\|Dx\|_1 = \sum_k \|D_k x\|_1`.
The adjoint is exact (the transpose of the same sparse matrix, tested against
:math:`\langle Dx, g\rangle = \langle x, D^\top g\rangle`).

>>> x = torch.arange(4.0).reshape(1, 1, 4, 1, 1)
>>> FiniteDifference().A(x).flatten()
tensor([1., 1., 1., 0.])
"""
from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics

from invdiff.operators.base import OperatorMixin

__all__ = ["FiniteDifference", "diff", "diff_adjoint"]


def diff(x: torch.Tensor, axis: int) -> torch.Tensor:
    r""":math:`D_k x` along ``axis`` (forward difference, zero at the last index)."""
    d = torch.zeros_like(x)
    n = x.shape[axis]
    d.narrow(axis, 0, n - 1).copy_(x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1))
    return d


def diff_adjoint(g: torch.Tensor, axis: int) -> torch.Tensor:
    r""":math:`D_k^\top g` along ``axis``: :math:`g_{i-1}[i>0] - g_i[i<N-1]` (minus the backward divergence)."""
    n = g.shape[axis]
    out = torch.zeros_like(g)
    out.narrow(axis, 1, n - 1).add_(g.narrow(axis, 0, n - 1))
    out.narrow(axis, 0, n - 1).sub_(g.narrow(axis, 0, n - 1))
    return out


class FiniteDifference(OperatorMixin, LinearPhysics):
    r"""The stacked forward differences :math:`D = (D_k)_{k \in \text{axes}}` of the module docstring.

    :param axes: spatial axes of ``(B, C, D, H, W)`` (2 = z, 3 = y, 4 = x); default ``(2,)`` (:math:`D_z`).
    :param x_shape: ``(C, D, H, W)`` of one volume, or ``None`` (any shape; no shape checks).

    >>> D = FiniteDifference(axes=(2, 3, 4))
    >>> D.A(torch.ones(1, 1, 3, 3, 3)).abs().max()
    tensor(0.)
    """

    def __init__(self, axes: tuple[int, ...] = (2,), x_shape: tuple[int, ...] | None = None):
        axes = tuple(int(a) for a in axes)
        if not axes or any(a < 2 for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes: expected distinct spatial axes >= 2 of (B, C, ...), got {axes}")
        super().__init__()
        self.axes = axes
        if x_shape is not None:
            self.x_shape = tuple(x_shape)
            self.y_shape = (len(axes), *self.x_shape)

    def _check(self, x: torch.Tensor, name: str, stacked: bool) -> None:
        shape = getattr(self, "y_shape" if stacked else "x_shape", None)
        if shape is not None:
            (self.check_y if stacked else self.check_x)(x, name)
        elif x.ndim < max(self.axes) + 1 + stacked:
            raise ValueError(f"{name}: expected at least {max(self.axes) + 1 + stacked} axes for axes={self.axes}, "
                             f"got shape {tuple(x.shape)}")

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`Dx`: ``(B, C, ...) -> (B, len(axes), C, ...)``."""
        self._check(x, "x", False)
        return torch.stack([diff(x, a) for a in self.axes], dim=1)

    def A_adjoint(self, g: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`D^\top g = \sum_k D_k^\top g_k`: ``(B, len(axes), C, ...) -> (B, C, ...)``."""
        self._check(g, "g", True)
        if g.shape[1] != len(self.axes):
            raise ValueError(f"g: expected {len(self.axes)} stacked differences on axis 1, got shape {tuple(g.shape)}")
        out = diff_adjoint(g[:, 0], self.axes[0])
        for k, a in enumerate(self.axes[1:], start=1):
            out = out + diff_adjoint(g[:, k], a)
        return out

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:  # pragma: no cover - not a measurement
        raise NotImplementedError("FiniteDifference is a regulariser, not a measurement operator")

