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
from invdiff.operators.noise import make_noise
from invdiff.operators.registry import register
from invdiff.utils.checks import check_floating


class Matrix(OperatorMixin, LinearPhysics):
    r"""A dense matrix as a linear operator on vectors: :math:`y = A x + \sigma \varepsilon`.

    .. math::
        A : \mathbb{R}^n \to \mathbb{R}^m, \qquad A^\top y = \sum_i y_i a_i, \qquad
        A^\dagger = V \Sigma^{+} U^\top .

    :param matrix: ``(m, n)`` (shared by the batch) or ``(B, m, n)`` (one matrix per signal).
    :param sigma: standard deviation of additive Gaussian noise (``None``: noiseless).
    :param noise_model: any deepinv noise model (instead of ``sigma``).
    :param generator: ``torch.Generator`` of the noise.

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
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
    ):
        check_floating("matrix", matrix)
        if matrix.ndim not in (2, 3):
            raise ValueError(f"matrix: expected shape (m, n) or (B, m, n), got {tuple(matrix.shape)}")
        if matrix.shape[-1] == 0 or matrix.shape[-2] == 0:
            raise ValueError(f"matrix: expected non-empty dimensions, got {tuple(matrix.shape)}")
        if sigma is not None and noise_model is not None:
            raise ValueError("give either sigma or noise_model, not both")
        if noise_model is None:
            noise_model = make_noise(sigma=sigma, generator=generator)
        super().__init__(noise_model=noise_model, device=matrix.device)
        self.register_buffer("matrix", matrix)
        self.x_shape = (matrix.shape[-1],)
        self.y_shape = (matrix.shape[-2],)
        self._pinv: torch.Tensor | None = None

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
    sigma: float | None = None,
    s_min: float = 0.0,
    s_max: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    **kwargs,
) -> Matrix:
    r"""A random ``(m, n)`` :class:`Matrix`.

    ``kind="gaussian"``: i.i.d. :math:`A_{ij} \sim \mathcal N(0, 1/m)` (so
    :math:`\mathbb E\|Ax\|^2 = \|x\|^2`). ``kind="svd"``: :math:`A = U \operatorname{diag}(s) V^\top`
    with Haar-orthogonal ``U``, ``V`` and :math:`s_i \sim \mathcal U(s_{min}, s_{max})` sorted
    descending (the MCGdiff benchmark). ``seed`` fixes the matrix; the factors are kept as
    ``op.U``, ``op.s``, ``op.V``.

    >>> A = make_matrix(m=2, n=4, seed=1)
    >>> A.matrix.shape, bool((A.s[:-1] >= A.s[1:]).all())
    (torch.Size([2, 4]), True)
    """
    if not (isinstance(m, int) and isinstance(n, int)) or m < 1 or n < 1:
        raise ValueError(f"m, n: expected positive integers, got m={m!r}, n={n!r}")
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
    op = Matrix(M.to(dtype=dtype, device=device), sigma=sigma, **kwargs)
    if factors is not None:
        op.U, op.s, op.V = (f.to(dtype=dtype, device=device) for f in factors)
    return op
