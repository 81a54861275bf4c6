r"""Classical channel estimators for ``y = Phi vec(H) + n``: LS, LMMSE, OMP (DFT / polar dictionaries).

All work on complex vectors :math:`h = \mathrm{vec}(H)` (row-major, ``H[i, j]`` at ``i Nt + j``)
and on the (real, imag) tensors of :class:`invdiff.operators.channel.HybridBeamforming`
through :func:`estimate` helpers. :math:`\sigma_n^2` is the *complex* noise variance
(``2 sigma**2`` for the operator's per-channel ``sigma``).

- Least squares: :math:`\hat h = \Phi^\dagger y`; for full column rank
  :math:`\mathbb E\|\hat h - h\|^2 = \sigma_n^2 \operatorname{tr}((\Phi^H\Phi)^{-1})`.
- LMMSE with prior mean :math:`\mu` and covariance :math:`C` (sample moments of training channels):

  .. math::
      \hat h = \mu + C\Phi^H(\Phi C \Phi^H + \sigma_n^2 I)^{-1}(y - \Phi\mu), \qquad
      \mathrm{MSE} = \operatorname{tr}\bigl(C - C\Phi^H(\Phi C\Phi^H + \sigma_n^2 I)^{-1}\Phi C\bigr).

- OMP (Tropp and Gilbert 2007) on :math:`h = \Psi c` with a dictionary :math:`\Psi`: the far-field
  angular (DFT) dictionary, or the polar-domain dictionary of Cui and Dai (2022) for near-field
  channels, each as the Kronecker product of receive and transmit dictionaries.

>>> import torch
>>> Phi = torch.randn(8, 4, dtype=torch.complex128)
>>> h = torch.randn(2, 4, dtype=torch.complex128)
>>> torch.allclose(least_squares(h @ Phi.T, Phi), h)
True
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "least_squares", "ls_nmse", "LMMSE", "omp", "angular_dictionary", "polar_dictionary",
    "kron_dictionary", "array_positions",
]


def least_squares(y: torch.Tensor, Phi: torch.Tensor) -> torch.Tensor:
    r"""Least squares (minimum norm) :math:`\hat h = \Phi^\dagger y` for complex rows ``y`` (B, M)."""
    return y @ torch.linalg.pinv(Phi).T


def ls_nmse(Phi: torch.Tensor, noise_var: float, signal_power: float) -> float:
    r"""Closed-form LS NMSE :math:`\sigma_n^2 \operatorname{tr}((\Phi^H\Phi)^{-1}) / \mathbb E\|h\|^2`
    (``Phi`` of full column rank)."""
    G = Phi.conj().T @ Phi
    return float(noise_var * torch.linalg.inv(G).diagonal().real.sum() / signal_power)


class LMMSE:
    r"""The LMMSE estimator from the sample moments of training channels (module docstring).

    :param mean: prior mean :math:`\mu`, complex (N,).
    :param cov: prior covariance :math:`C`, complex (N, N), Hermitian PSD.

    ``LMMSE.fit(h_train)`` uses the sample mean and covariance of complex rows ``(n, N)``.
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or mean.shape != cov.shape[:1]:
            raise ValueError(f"mean, cov: expected shapes (N,), (N, N); got {tuple(mean.shape)}, {tuple(cov.shape)}")
        self.mean = mean.to(torch.complex128)
        self.cov = cov.to(torch.complex128)

    @classmethod
    def fit(cls, h: torch.Tensor) -> "LMMSE":
        """Sample mean and covariance (normalised by n - 1) of complex training rows ``h`` (n, N)."""
        if h.ndim != 2 or h.shape[0] < 2:
            raise ValueError(f"h: expected complex training rows (n >= 2, N), got shape {tuple(h.shape)}")
        h = h.to(torch.complex128)
        mu = h.mean(0)
        d = h - mu
        return cls(mu, d.T @ d.conj() / (h.shape[0] - 1))

    def _gain(self, Phi: torch.Tensor, noise_var: float) -> torch.Tensor:
        Phi = Phi.to(torch.complex128)
        CPh = self.cov @ Phi.conj().T  # (N, M)
        S = Phi @ CPh + noise_var * torch.eye(Phi.shape[0], dtype=Phi.dtype, device=Phi.device)
        return torch.linalg.solve(S, CPh.conj().T).conj().T  # C Phi^H S^{-1}, (N, M)

    def __call__(self, y: torch.Tensor, Phi: torch.Tensor, noise_var: float) -> torch.Tensor:
        r""":math:`\hat h` for complex rows ``y`` (B, M)."""
        K = self._gain(Phi, noise_var)
        Phi = Phi.to(torch.complex128)
        r = y.to(torch.complex128) - self.mean @ Phi.T
        return self.mean + r @ K.T

    def mse(self, Phi: torch.Tensor, noise_var: float) -> float:
        r"""Closed-form MSE :math:`\operatorname{tr}(C - K\Phi C)`, :math:`K = C\Phi^H S^{-1}`."""
        K = self._gain(Phi, noise_var)
        return float((self.cov - K @ Phi.to(torch.complex128) @ self.cov).diagonal().real.sum())

    def nmse(self, Phi: torch.Tensor, noise_var: float) -> float:
        r"""Closed-form NMSE :math:`\mathrm{MSE} / \mathbb E\|h\|^2` with :math:`\mathbb E\|h\|^2 = \operatorname{tr} C + \|\mu\|^2`."""
        return self.mse(Phi, noise_var) / float(self.cov.diagonal().real.sum() + self.mean.abs().pow(2).sum())


def array_positions(n_sub: int, n_per: int, antenna_spacing: float, subarray_spacing: float, wavelength: float) -> torch.Tensor:
    """Antenna positions (m) along an AoSA's axis, centred (float64), as in ``datasets/channels.py``."""
    v = (torch.arange(n_sub, dtype=torch.float64) - (n_sub - 1) / 2) * subarray_spacing * wavelength
    u = (torch.arange(n_per, dtype=torch.float64) - (n_per - 1) / 2) * antenna_spacing * wavelength
    return (v[:, None] + u).reshape(-1)


def angular_dictionary(positions: torch.Tensor, wavelength: float, oversample: int = 2) -> torch.Tensor:
    r"""Far-field dictionary :math:`[a(\mu_g)]_n = e^{j 2\pi \delta_n \mu_g/\lambda}/\sqrt N` on the
    grid :math:`\mu_g = -1 + (2g+1)/G`, :math:`G = \text{oversample}\cdot N` (the DFT for a
    half-wavelength ULA), shape (N, G)."""
    N = positions.numel()
    G = oversample * N
    mu = -1 + (2 * torch.arange(G, dtype=torch.float64) + 1) / G
    return torch.exp(1j * 2 * math.pi / wavelength * positions[:, None] * mu[None]) / math.sqrt(N)


def polar_dictionary(positions: torch.Tensor, wavelength: float, rings: int = 3, beta: float = 1.6,
                     oversample: int = 1) -> torch.Tensor:
    r"""Polar-domain dictionary (Cui and Dai 2022): atoms :math:`[b(\mu, r)]_n =
    e^{-j\frac{2\pi}{\lambda}(r_n - r)}/\sqrt N`, :math:`r_n = \sqrt{r^2 + \delta_n^2 - 2 r \delta_n \mu}`,
    on a grid of :math:`\mu` (as :func:`angular_dictionary`) and distances
    :math:`r_s = Z_\Delta (1 - \mu^2)/s`, :math:`s = 1..S`, :math:`Z_\Delta = D^2/(2\lambda\beta^2)`
    (aperture :math:`D`), plus the far-field atoms (:math:`s = 0`). Shape (N, G (S + 1))."""
    far = angular_dictionary(positions, wavelength, oversample)
    N = positions.numel()
    G = far.shape[1]
    mu = -1 + (2 * torch.arange(G, dtype=torch.float64) + 1) / G
    D = float(positions.max() - positions.min())
    Z = D**2 / (2 * wavelength * beta**2)
    atoms = [far]
    for s in range(1, rings + 1):
        r = (Z * (1 - mu**2) / s).clamp_min(wavelength)  # (G,)
        rn = torch.sqrt(r[None] ** 2 + positions[:, None] ** 2 - 2 * r[None] * positions[:, None] * mu[None])
        atoms.append(torch.exp(-1j * 2 * math.pi / wavelength * (rn - r[None])) / math.sqrt(N))
    return torch.cat(atoms, 1)


def kron_dictionary(psi_r: torch.Tensor, psi_t: torch.Tensor) -> torch.Tensor:
    r"""2D dictionary for row-major :math:`\mathrm{vec}(H)`, :math:`H = \sum c\, \psi_r \psi_t^T`:
    atoms :math:`\psi_r \otimes \psi_t`, shape (Nr Nt, Gr Gt)."""
    return torch.kron(psi_r.contiguous(), psi_t.contiguous())


def omp(y: torch.Tensor, A: torch.Tensor, noise_var: float, max_atoms: int = 32, tol_factor: float = 1.0) -> torch.Tensor:
    r"""Orthogonal matching pursuit for complex rows ``y`` (B, M) and sensing matrix ``A = Phi Psi``
    (M, K). Stops when :math:`\|r\|^2 \le \text{tol\_factor}\cdot M \sigma_n^2` (the noise energy)
    or after ``max_atoms``. Returns the coefficients ``c`` (B, K); the channel is ``c @ Psi.T``.
    """
    B, M = y.shape
    norms = A.abs().pow(2).sum(0).sqrt().clamp_min(1e-30)
    An = A / norms
    out = torch.zeros(B, A.shape[1], dtype=A.dtype, device=A.device)
    for b in range(B):
        r = y[b].clone()
        support: list[int] = []
        coef = None
        for _ in range(min(max_atoms, M)):
            if float(r.abs().pow(2).sum()) <= tol_factor * M * noise_var:
                break
            k = int((An.conj().T @ r).abs().argmax())
            if k in support:
                break
            support.append(k)
            As = A[:, support]
            coef = torch.linalg.lstsq(As, y[b][:, None]).solution[:, 0]
            r = y[b] - As @ coef
        if coef is not None:
            out[b, support] = coef
    return out
