r"""deepinv's decomposable interface (an SVD) for operators that have one.

deepinv's ``DecomposablePhysics`` writes :math:`A = U \operatorname{diag}(s) V^\top` and its
SVD-based algorithms (DDRM, Kawar et al. 2022) read ``physics.mask`` (the singular values),
``U``, ``U_adjoint``, ``V`` and ``V_adjoint``. DDRM needs the spectral coordinates
:math:`\bar x = V^\top x` and :math:`\bar y = U^\top y` to have the same shape, so here, for
:math:`A \in \mathbb R^{m \times n}` with :math:`k = \min(m, n)`:

.. math::
    V^\top x \in \mathbb R^n\ (\text{full } V), \qquad
    \bar y = \bigl((U^\top y)_{1..k}, 0, \dots, 0\bigr) \in \mathbb R^n, \qquad
    \text{mask} = (s_1, \dots, s_k, 0, \dots, 0),

so that ``U(mask * V_adjoint(x)) = A x`` and ``V(mask * U_adjoint(y)) = A^T y`` exactly; all
three live in the signal's shape ``(B, *x_shape)`` (``mask``: ``(1, *x_shape)``).

Which operators have it: single-coil Cartesian MRI natively (deepinv's ``MRI``:
:math:`U = I`, :math:`V^\top = \mathcal F_c`, mask = sampling mask); :class:`~invdiff.operators.matrix.Matrix`
through :class:`SVDMixin` (the SVD of its matrix, computed once on first use). CT, blur with
non-circular boundaries, multi-coil MRI and volumes have no cheap SVD; asking them for
``mask`` raises an error that says so. For small operators, :func:`decomposable` builds the
exact SVD from the dense matrix (``n m`` entries, at most ``max_entries``): e.g. 32 x 32 CT
with 18 views is a 828 x 1024 matrix, its SVD a fraction of a second.

>>> import torch
>>> from invdiff.operators import CT
>>> A = decomposable(CT(8, angles=3))
>>> x = torch.randn(2, *A.x_shape, dtype=torch.float64)
>>> bool(torch.allclose(A.U(A.mask * A.V_adjoint(x)), A.A(x)))
True
"""
from __future__ import annotations

import math

import torch
from deepinv.physics import LinearPhysics

from invdiff.operators.base import OperatorMixin


class SVDMixin:
    """``mask``, ``U``, ``U_adjoint``, ``V``, ``V_adjoint`` from the full SVD of ``dense_matrix()``
    (computed once in float64, cached per dtype and device). The class must provide
    ``dense_matrix() -> (m, n)`` tensor acting on flattened signals, ``x_shape`` and ``y_shape``."""

    def dense_matrix(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _svd_factors(self, dtype: torch.dtype | None = None, device=None):
        cache = self.__dict__.setdefault("_svd_factors_cache", {})
        if "float64" not in cache:
            M = self.dense_matrix().detach().to(torch.float64)
            m, n = M.shape
            U, s, Vh = torch.linalg.svd(M, full_matrices=True)  # U (m, m), s (k,), Vh (n, n)
            mask = torch.zeros(n, dtype=torch.float64, device=M.device)
            mask[: s.numel()] = s
            cache["float64"] = (U, mask, Vh.mT.contiguous())
        if dtype is None:
            dtype, device = self.dense_matrix().dtype, self.dense_matrix().device
        key = (dtype, str(device))
        if key not in cache:
            cache[key] = tuple(t.to(dtype=dtype, device=device) for t in cache["float64"])
        return cache[key]

    @property
    def mask(self) -> torch.Tensor:
        """Singular values padded with zeros to the signal size, shape ``(1, *x_shape)``."""
        _, s, _ = self._svd_factors()
        return s.reshape(1, *self.x_shape)

    def _flat(self, t: torch.Tensor, shape) -> torch.Tensor:
        return t.reshape(t.shape[0], math.prod(shape))

    def V_adjoint(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`V^\top x`, shape ``(B, *x_shape)``."""
        _, _, V = self._svd_factors(x.dtype, x.device)
        return (self._flat(x, self.x_shape) @ V).reshape(x.shape[0], *self.x_shape)

    def V(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`V \bar x`, shape ``(B, *x_shape)``."""
        _, _, V = self._svd_factors(z.dtype, z.device)
        return (self._flat(z, self.x_shape) @ V.mT).reshape(z.shape[0], *self.x_shape)

    def U_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""The first :math:`k` entries of :math:`U^\top y`, zero-padded to the signal shape."""
        U, s, _ = self._svd_factors(y.dtype, y.device)
        n, k = s.numel(), min(U.shape[0], s.numel())
        w = self._flat(y, self.y_shape) @ U[:, :k]
        out = w.new_zeros(y.shape[0], n)
        out[:, :k] = w
        return out.reshape(y.shape[0], *self.x_shape)

    def U(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`U_{:, 1..k}\, \bar y_{1..k}`, shape ``(B, *y_shape)``."""
        U, s, _ = self._svd_factors(z.dtype, z.device)
        k = min(U.shape[0], s.numel())
        return (self._flat(z, self.x_shape)[:, :k] @ U[:, :k].mT).reshape(z.shape[0], *self.y_shape)


def dense_matrix_of(op, x_shape=None, chunk: int = 256, dtype=torch.float64) -> torch.Tensor:
    r"""The ``(m, n)`` matrix of a linear operator, column by column: :math:`M e_j = A e_j`."""
    x_shape = tuple(x_shape if x_shape is not None else op.x_shape)
    n = math.prod(x_shape)
    dev = next((b.device for b in op.buffers()), torch.device("cpu")) if hasattr(op, "buffers") else torch.device("cpu")
    cols = []
    with torch.no_grad():
        for j in range(0, n, chunk):
            E = torch.zeros(min(chunk, n - j), n, dtype=dtype, device=dev)
            E[torch.arange(E.shape[0]), torch.arange(j, j + E.shape[0])] = 1
            cols.append(op.A(E.reshape(-1, *x_shape)).reshape(E.shape[0], -1))
    return torch.cat(cols).mT.contiguous()


class DenseSVD(SVDMixin, OperatorMixin, LinearPhysics):
    r"""A linear operator replaced by its dense matrix, with deepinv's decomposable interface.

    :math:`A x = M x` with :math:`M` the exact matrix of the original operator (built column by
    column in float64, stored in ``dtype``, whose dtype ``mask`` has); ``noise_model``,
    ``x_shape`` and ``y_shape`` are the original's; the baseline is the pseudo-inverse
    :math:`V \operatorname{diag}(s^+) U^\top`.
    """

    def __init__(self, op, max_entries: int = 2**24, dtype: torch.dtype = torch.float32):
        xs, ys = tuple(op.x_shape), tuple(op.y_shape)
        n, m = math.prod(xs), math.prod(ys)
        if n * m > max_entries:
            raise ValueError(
                f"decomposable: the dense matrix of {type(op).__name__} would have {m} x {n} = {m * n} entries, more than "
                f"max_entries={max_entries}; its SVD is not cheap at this size (use a smaller operator or a sampler "
                "that needs only A and A^T)"
            )
        if not isinstance(op, LinearPhysics):
            raise TypeError(f"decomposable: expected a linear operator (deepinv LinearPhysics), got {type(op).__name__}")
        M = dense_matrix_of(op, xs)
        super().__init__(noise_model=op.noise_model, device=M.device)
        self.x_shape, self.y_shape = xs, ys
        self.register_buffer("matrix", M.to(dtype))  # the SVD is taken in float64 either way

    def dense_matrix(self) -> torch.Tensor:
        return self.matrix

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_x(x)
        return (self._flat(x, self.x_shape) @ self.matrix.to(x).mT).reshape(x.shape[0], *self.y_shape)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        self.check_y(y)
        return (self._flat(y, self.y_shape) @ self.matrix.to(y)).reshape(y.shape[0], *self.x_shape)

    def baseline(self, y: torch.Tensor, rcond: float = 1e-6, **kwargs) -> torch.Tensor:
        r"""Pseudo-inverse :math:`V \operatorname{diag}(s^+) U^\top y` (singular values below
        ``rcond * s_max`` treated as zero)."""
        self.check_y(y)
        _, s, _ = self._svd_factors(y.dtype, y.device)
        inv = torch.where(s > rcond * s.max(), 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        return self.V(inv.reshape(1, *self.x_shape) * self.U_adjoint(y))


def decomposable(op, max_entries: int = 2**24, dtype: torch.dtype = torch.float32):
    """``op`` itself if it already has deepinv's decomposable interface (single-coil MRI,
    :class:`~invdiff.operators.matrix.Matrix`), else :class:`DenseSVD` of it (small operators)."""
    from deepinv.physics import DecomposablePhysics

    if isinstance(op, (DecomposablePhysics, SVDMixin)):
        return op
    return DenseSVD(op, max_entries=max_entries, dtype=dtype)
