"""Dense linear operators ``y = A x`` on vectors, for low-dimensional and exact-posterior problems.

:class:`Matrix` wraps an explicit ``(m, n)`` matrix (or a batch ``(B, m, n)``, one matrix per
signal) as a deepinv ``LinearPhysics`` on signals of shape ``(B, n)``. The adjoint is the exact
transpose, the baseline is the Moore-Penrose pseudo-inverse, and ``svd()`` gives the factors
that SVD-based samplers (DDRM, MCGdiff) and the closed-form Gaussian-mixture posterior use.

The registered factory ``make("matrix", ...)`` draws either a Gaussian matrix or the
``A = U diag(s) V^T`` matrix of the MCGdiff Gaussian-mixture benchmark (Cardoso et al. 2023):
Haar-random orthogonal ``U``, ``V`` and sorted uniform singular values.
"""
from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin
from invdiff.operators.common import check_dtype, finite_number, resolve_common
from invdiff.operators.registry import register
from invdiff.operators.svd import SVDMixin
from invdiff.utils.checks import check_floating


class Matrix(SVDMixin, OperatorMixin, LinearPhysics):
    r"""A dense matrix as a linear operator on vectors: :math:`y = A x + \sigma \varepsilon`.

    .. math::
        A : \mathbb{R}^n \to \mathbb{R}^m, \qquad A^\top y = \sum_i y_i a_i, \qquad
        A^\dagger = V \Sigma^{+} U^\top .

    :param matrix: ``(m, n)`` (shared by the batch) or ``(B, m, n)`` (one matrix per signal).
    :param sigma, gain, noise_model, generator, device, dtype: the common arguments
        (:mod:`invdiff.operators.common`; ``device`` / ``dtype`` default to the matrix's).

    It exposes deepinv's decomposable interface (``mask``, ``U``, ``U_adjoint``, ``V``,
    ``V_adjoint``; :class:`~invdiff.operators.svd.SVDMixin`, from the SVD computed once on first
    use), so deepinv's DDRM runs on it (one shared matrix; a batch of matrices has no single SVD).

    Signals are ``(B, n)``; measurements ``(B, m)``. The matrix follows the dtype of ``x`` on
    each call (a float32 matrix applied to a float64 signal is exact in float64).

    >>> A = Matrix(torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]]))
    >>> A.A(torch.tensor([[1.0, 1.0]]))
    tensor([[3., 1., 1.]])
    >>> A.x_shape, A.y_shape
    ((2,), (3,))
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        sigma: float | None = None,
        gain: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        check_floating("matrix", matrix)
        if matrix.ndim not in (2, 3):
            raise ValueError(f"matrix: expected shape (m, n) or (B, m, n), got {tuple(matrix.shape)}")
        if matrix.shape[-1] == 0 or matrix.shape[-2] == 0:
            raise ValueError(f"matrix: expected non-empty dimensions, got {tuple(matrix.shape)}")
        common = resolve_common(sigma, gain, noise_model, generator, matrix.device if device is None else device, dtype)
        matrix = matrix.to(device=common.device, dtype=common.dtype or matrix.dtype)
        super().__init__(noise_model=common.noise_model, device=common.device)
        self.register_buffer("matrix", matrix)
        self.x_shape = (matrix.shape[-1],)
        self.y_shape = (matrix.shape[-2],)
        self._pinv: torch.Tensor | None = None
        self._svd_cache = None
        common.finish(self)

    @property
    def batched(self) -> bool:
        """Whether there is one matrix per signal (``matrix.ndim == 3``)."""
        return self.matrix.ndim == 3

    def _mat(self, t: torch.Tensor) -> torch.Tensor:
        M = self.matrix
        if M.dtype != t.dtype or M.device != t.device:
            M = M.to(device=t.device, dtype=t.dtype)
        if self.batched and t.shape[0] != M.shape[0]:
            raise ValueError(
                f"batched Matrix holds {M.shape[0]} matrices: expected a batch of {M.shape[0]} signals, got {t.shape[0]}"
            )
        return M

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y = A x` for ``x`` of shape ``(B, n)``."""
        self.check_x(x)
        M = self._mat(x)
        if self.batched:
            return torch.bmm(M, x.unsqueeze(-1)).squeeze(-1)
        return x @ M.mT

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`A^\top y` for ``y`` of shape ``(B, m)``."""
        self.check_y(y)
        M = self._mat(y)
        if self.batched:
            return torch.bmm(M.mT, y.unsqueeze(-1)).squeeze(-1)
        return y @ M

    def svd(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Thin SVD :math:`A = U \operatorname{diag}(s) V^\top`: returns ``(U, s, Vh)``, ``s`` descending."""
        M = self.matrix if dtype is None else self.matrix.to(dtype)
        return torch.linalg.svd(M, full_matrices=False)

    def dense_matrix(self) -> torch.Tensor:
        """The ``(m, n)`` matrix, for :class:`~invdiff.operators.svd.SVDMixin` (one shared matrix only)."""
        if self.batched:
            # AttributeError: hasattr(op, "mask") stays False for a batch of matrices
            raise AttributeError("a batched Matrix holds one matrix per signal, so no single SVD (deepinv's DDRM needs one)")
        return self.matrix

    def pinv(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        r"""The Moore-Penrose pseudo-inverse :math:`A^\dagger` (computed once in float64, cached)."""
        if self._pinv is None or self._pinv.device != self.matrix.device:
            self._pinv = torch.linalg.pinv(self.matrix.to(torch.float64))
        return self._pinv.to(dtype or self.matrix.dtype)

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Minimum-norm least-squares solution :math:`A^\dagger y` (exact, via the pseudo-inverse)."""
        self.check_y(y)
        P = self.pinv(y.dtype).to(y.device)
        if self.batched:
            self._mat(y)  # batch-size check
            return torch.bmm(P, y.unsqueeze(-1)).squeeze(-1)
        return y @ P.mT

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""The pseudo-inverse reconstruction :math:`\hat x = A^\dagger y` (same as ``A_dagger``)."""
        return self.A_dagger(y)


def haar_orthogonal(n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    r"""A Haar-distributed random orthogonal ``(n, n)`` matrix (QR of a Gaussian matrix with the
    sign of ``diag(R)`` fixed, Mezzadri 2007)."""
    G = torch.randn(n, n, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(G)
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


@register("matrix", "dense random matrix (Gaussian, or U diag(s) V^T with sorted uniform s) on (B, n) vectors")
def make_matrix(
    m: int = 8,
    n: int = 16,
    kind: str = "svd",
    seed: int = 0,
    s_min: float = 0.0,
    s_max: float = 1.0,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> Matrix:
    r"""A random ``(m, n)`` :class:`Matrix`.

    ``kind="gaussian"``: i.i.d. :math:`A_{ij} \sim \mathcal N(0, 1/m)` (so
    :math:`\mathbb E\|Ax\|^2 = \|x\|^2`). ``kind="svd"``: :math:`A = U \operatorname{diag}(s) V^\top`
    with Haar-orthogonal ``U``, ``V`` and :math:`s_i \sim \mathcal U(s_{min}, s_{max})` sorted
    descending (the MCGdiff benchmark). ``seed`` fixes the matrix; the factors are kept as
    ``op.factors = (U, s, V)`` (thin, ``U`` of shape ``(m, k)``, ``V`` ``(n, k)``) and ``op.s``.
    ``dtype`` (default float32) and ``device`` are the matrix's; ``sigma``, ``gain``,
    ``noise_model``, ``generator`` go to :class:`Matrix`.

    >>> A = make_matrix(m=2, n=4, seed=1)
    >>> A.matrix.shape, bool((A.s[:-1] >= A.s[1:]).all())
    (torch.Size([2, 4]), True)
    """
    if not (isinstance(m, int) and isinstance(n, int)) or isinstance(m, bool) or isinstance(n, bool) or m < 1 or n < 1:
        raise ValueError(f"m, n: expected positive integers, got m={m!r}, n={n!r}")
    finite_number("s_min", s_min)
    finite_number("s_max", s_max)
    finite_number("seed", seed, low=0, low_inclusive=True, integer=True)
    if not 0 <= s_min <= s_max:
        raise ValueError(f"expected 0 <= s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        M = torch.randn(m, n, generator=g, dtype=torch.float64) / m**0.5
        factors = None
    elif kind == "svd":
        U = haar_orthogonal(m, g)
        V = haar_orthogonal(n, g)
        k = min(m, n)
        s = torch.sort(s_min + (s_max - s_min) * torch.rand(k, generator=g, dtype=torch.float64), descending=True).values
        M = U[:, :k] @ torch.diag(s) @ V[:, :k].T
        factors = (U[:, :k], s, V[:, :k])
    else:
        raise ValueError(f"kind: expected 'gaussian' or 'svd', got {kind!r}")
    dtype = check_dtype(dtype) or torch.float32
    op = Matrix(M.to(dtype), device=device, dtype=dtype, **kwargs)
    if factors is not None:
        op.s = factors[1].to(dtype=op.matrix.dtype, device=op.matrix.device)
        op.factors = tuple(f.to(dtype=op.matrix.dtype, device=op.matrix.device) for f in factors)
    return op
