"""Shared behaviour of invdiff operators: ``x_shape``, cheap input checks, ``baseline(y)``.

Every operator of :mod:`invdiff.operators` is a deepinv ``LinearPhysics`` that also mixes in
:class:`OperatorMixin`, which gives it

- ``x_shape``: the shape of one signal without the batch axis (``(n,)``, ``(C, H, W)``, ...);
- ``y_shape``: the shape of one measurement without the batch axis;
- ``check_x(x)`` / ``check_y(y)``: shape and dtype checks that cost nothing (no NaN scans, no
  device synchronisation) and run on every call of ``A`` / ``A_adjoint``;
- ``baseline(y)``: the classical, prior-free reconstruction of the modality (pseudo-inverse for
  :class:`~invdiff.operators.matrix.Matrix`, filtered back-projection for CT, zero-filled or
  SENSE for MRI, Wiener for blur). Samplers use it as a starting point and the demo as the
  "what you would do without a prior" column. Its contract: it returns a signal of shape
  ``(B, *x_shape)`` and, for noiseless data, lowers the data residual ``||A x - y||`` below
  ``||y||`` (the residual of ``x = 0``).
"""
from __future__ import annotations

import torch

from invdiff.operators.common import LinearFlag
from invdiff.utils.checks import check_floating, check_shape


#: the attributes of deepinv's ``DecomposablePhysics`` (an SVD :math:`A = U \operatorname{diag}(s) V^\top`)
SVD_ATTRIBUTES = ("mask", "U", "U_adjoint", "V", "V_adjoint")


class OperatorMixin(LinearFlag):
    """``x_shape``/``y_shape`` bookkeeping, shape/dtype checks and the ``baseline`` hook.

    ``linear`` is ``True`` exactly for deepinv ``LinearPhysics``. ``supports_poisson`` is
    ``False`` for operators with complex measurements (a ``gain`` is then rejected). Asking an
    operator without an SVD for the decomposable interface (``op.mask``, ``op.V_adjoint``, ...,
    what deepinv's DDRM reads) raises an ``AttributeError`` that says so and names the way out
    (:func:`invdiff.operators.svd.decomposable`), instead of torch's bare "no attribute".
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    supports_poisson: bool = True

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in SVD_ATTRIBUTES:
                raise AttributeError(
                    f"{type(self).__name__} has no singular value decomposition, so no {name!r}: deepinv's "
                    "DDRM and other SVD-based methods need a DecomposablePhysics (mask, U, V). Use a sampler "
                    "that needs only A and A^T (DPS, DDS, DiffPIR), or invdiff.operators.svd.decomposable(op), "
                    "which builds the exact SVD from the dense matrix (small operators only)"
                ) from None
            raise

    def check_x(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise unless ``x`` is a floating tensor of shape ``(B, *x_shape)``."""
        check_floating(name, x)
        check_shape(name, x, (None, *self.x_shape))

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        """Raise unless ``y`` is a floating tensor of shape ``(B, *y_shape)``."""
        check_floating(name, y)
        check_shape(name, y, (None, *self.y_shape))

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:  # pragma: no cover - abstract
        """The classical reconstruction of this modality from ``y`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} has no baseline reconstruction")


def tikhonov_cg(op, y: torch.Tensor, lam: float, max_iter: int = 30, tol: float = 1e-6) -> torch.Tensor:
    r"""Regularised least squares by conjugate gradients (deepinv's ``conjugate_gradient``):

    .. math::
        \hat x = \arg\min_x \|A x - y\|^2 + \lambda \|x\|^2
        \iff (A^\top A + \lambda I)\, \hat x = A^\top y .

    Started from 0, every CG iterate lowers the objective, so ``||A x - y|| < ||y||`` whenever
    ``A^T y != 0``: the SENSE reconstruction of Pruessmann et al. (1999) for multi-coil MRI and
    the Wiener/Tikhonov deconvolution for non-circular blur boundaries.
    """
    from deepinv.optim.linear.conjugate_gradient import conjugate_gradient

    if lam < 0:
        raise ValueError(f"lam: expected >= 0, got {lam}")
    b = op.A_adjoint(y)
    # deepinv's default eps=1e-8 in the step denominators biases late iterates; 1e-30 only
    # guards the 0/0 of an exactly zero right-hand side
    return conjugate_gradient(lambda v: op.A_adjoint_A(v) + lam * v, b, max_iter=max_iter, tol=tol, eps=1e-30)


def power_norm(
    op, x_shape: tuple[int, ...], n_iter: int = 100, tol: float = 1e-6, dtype=torch.float64, device=None,
    generator: torch.Generator | None = None,
) -> float:
    r"""The spectral norm :math:`\|A\|_2` by power iteration on :math:`A^\top A` from a seeded start.

    .. math::
        v_{k+1} = \frac{A^\top A v_k}{\|A^\top A v_k\|}, \qquad \|A\|_2^2 = \lim_k \|A^\top A v_k\| .

    Unlike deepinv's ``compute_sqnorm`` it never touches the global random state (default seed 0).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn((1, *x_shape), generator=g, dtype=dtype).to(device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(n_iter):
        w = op.A_adjoint_A(v)
        new = float(w.norm())
        if new == 0.0:
            return 0.0
        v = w / new
        if abs(new - lam) <= tol * new:
            lam = new
            break
        lam = new
    return lam**0.5
