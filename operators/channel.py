r"""Hybrid-beamforming channel training: ``y_q = W_q^H H F_q s_q + W_q^H n_q`` over Q frames.

Channel estimation in mmWave / THz UM-MIMO with a hybrid architecture (DiffPace, Hu, Han,
Gerstacker, Schober 2025; Arvinte and Tamir 2022). In frame :math:`q` the transmitter sends the
pilot :math:`s_q \in \mathbb C^{T}` through the analog precoder :math:`F_q \in \mathbb C^{N_t
\times T}` and the receiver combines with :math:`W_q \in \mathbb C^{N_r \times R}` (``R`` RF
chains). Both are constant-modulus phase shifters, :math:`[W_q]_{ir} = e^{j\theta}/\sqrt{N_r}`,
:math:`[F_q]_{jt} = e^{j\vartheta}/\sqrt{N_t}`, phases uniform (or quantised to ``bits`` bits),
and :math:`[s_q]_t = e^{j\varphi}/\sqrt{T}`. Stacking the frames,

.. math::
    y = \Phi\, \mathrm{vec}(H) + n, \qquad
    \Phi_{(q,r),(i,j)} = \overline{[W_q]_{ir}}\, [f_q]_j, \quad f_q = F_q s_q,

with :math:`n_q = W_q^H \tilde n_q`, :math:`\tilde n_q \sim \mathcal{CN}(0, \sigma_n^2 I_{N_r})`.
The combined noise has covariance :math:`\sigma_n^2 W_q^H W_q`; with ``whiten=True`` (default)
each frame is multiplied by :math:`L_q^{-1}`, :math:`L_q L_q^H = W_q^H W_q` (Cholesky), an
invertible map that keeps all information and makes the noise white, :math:`\mathcal{CN}(0,
\sigma_n^2 I)`, so the Gaussian likelihood of the samplers is exact.

SNR (as in DiffPace: received pilot power over noise power per measurement). With unit-norm
combiners and precoders and :math:`\mathbb E|H_{ij}|^2 = 1` (``E||H||_F^2 = Nr Nt``),
:math:`\mathbb E|w^H H f|^2 = 1`, so :math:`\mathrm{SNR} = 1/\sigma_n^2`. The noise is
:class:`~invdiff.operators.noise.ComplexGaussianNoise` (``sigma`` = :math:`\sigma_n`, the
*complex* standard deviation, :math:`\mathbb E|n_j|^2 = \sigma_n^2`; each (real, imag) channel
has standard deviation :math:`\sigma_n/\sqrt 2`), whose likelihood for the samplers is
:class:`~invdiff.samplers.likelihood.ComplexGaussianLikelihood`; ``snr_db`` sets
:math:`\sigma_n = 10^{-\mathrm{SNR}/20}`. ``op.noise_var`` is :math:`\sigma_n^2`.

Signals ``x`` are channels ``(B, 2, Nr, Nt)``; measurements ``(B, 2, Q, R)``.

>>> op = HybridBeamforming(nr=4, nt=4, frames=8, rf_chains=2, seed=0)
>>> x = torch.randn(3, *op.x_shape); y = torch.randn(3, *op.y_shape)
>>> bool(((op.A(x) * y).sum() - (x * op.A_adjoint(y)).sum()).abs() < 1e-4)
True
"""
from __future__ import annotations

import math

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin
from invdiff.operators.common import resolve_common
from invdiff.operators.complex import to_channels, to_complex
from invdiff.operators.noise import ComplexGaussianNoise
from invdiff.operators.registry import register
from invdiff.utils.checks import check_floating

__all__ = ["HybridBeamforming", "sigma_from_snr", "constant_modulus"]


def sigma_from_snr(snr_db: float) -> float:
    r"""Complex noise standard deviation :math:`\sigma_n = 10^{-\mathrm{SNR}/20}`
    (:math:`\sigma_n^2 = 1/\mathrm{SNR}`; each real channel has std :math:`\sigma_n/\sqrt2`).

    >>> round(sigma_from_snr(10.0) ** 2, 6)
    0.1
    """
    if not math.isfinite(snr_db):
        raise ValueError(f"snr_db: expected a finite number, got {snr_db}")
    return 10 ** (-snr_db / 20)


def constant_modulus(shape, n: int, bits: int | None, generator: torch.Generator) -> torch.Tensor:
    r"""Phase-shifter weights :math:`e^{j\theta}/\sqrt{n}`, :math:`\theta` uniform on
    :math:`[0, 2\pi)` or on the :math:`2^b` levels :math:`2\pi k / 2^b` (complex128)."""
    if bits is None:
        theta = 2 * math.pi * torch.rand(shape, generator=generator, dtype=torch.float64)
    else:
        if not isinstance(bits, int) or bits < 1:
            raise ValueError(f"bits: expected None or an int >= 1, got {bits!r}")
        levels = 2**bits
        theta = 2 * math.pi * torch.randint(levels, shape, generator=generator).to(torch.float64) / levels
    return torch.exp(1j * theta) / math.sqrt(n)


class HybridBeamforming(OperatorMixin, LinearPhysics):
    r"""Hybrid-beamforming channel sounding as a deepinv ``LinearPhysics`` on ``H`` (module docstring).

    :param nr, nt: receive and transmit antennas.
    :param frames: training frames ``Q``.
    :param rf_chains: receive RF chains ``R`` (measurements per frame).
    :param tx_rf_chains: transmit RF chains ``T`` (the pilot's length).
    :param bits: phase-shifter resolution (``None``: continuous phases).
    :param whiten: whiten the combined noise per frame (default True).
    :param seed: fixes the combiners, precoders and pilots.
    :param sigma: complex noise std :math:`\sigma_n`; or ``snr_db``; or a deepinv ``noise_model``
        (e.g. ``GaussianNoise(s)``, which is :math:`\mathcal{CN}(0, 2s^2)` on the channels).
    :param device, dtype: the common constructor arguments (buffers are complex128 and follow
        the input's precision on each call: complex64 for float32, complex128 for float64).
    :param generator: ``torch.Generator`` of the noise.

    ``Phi`` is the complex ``(M, Nr Nt)`` matrix (complex128), ``M = Q R``.
    """

    supports_poisson = False

    def __init__(
        self,
        nr: int = 16,
        nt: int = 16,
        frames: int = 64,
        rf_chains: int = 4,
        tx_rf_chains: int = 4,
        bits: int | None = None,
        whiten: bool = True,
        seed: int = 0,
        sigma: float | None = None,
        snr_db: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype | None = None,
        gain: float | None = None,
    ):
        for name, v in (("nr", nr), ("nt", nt), ("frames", frames), ("rf_chains", rf_chains), ("tx_rf_chains", tx_rf_chains)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if rf_chains > nr:
            raise ValueError(f"rf_chains: expected <= nr = {nr} (independent combiners), got {rf_chains}")
        if snr_db is not None:
            given = [k for k, v in (("sigma", sigma), ("noise_model", noise_model)) if v is not None]
            if given:
                raise ValueError(f"give only one of snr_db and {' and '.join(given)} (they all set the noise)")
            sigma = sigma_from_snr(float(snr_db))
        # the common arguments, one rule (invdiff.operators.common); sigma is the complex std
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype, complex_noise=True)
        device = common.device
        super().__init__(noise_model=common.noise_model, device=device)
        g = torch.Generator().manual_seed(seed)
        W = constant_modulus((frames, nr, rf_chains), nr, bits, g)
        F = constant_modulus((frames, nt, tx_rf_chains), nt, bits, g)
        s = constant_modulus((frames, tx_rf_chains), tx_rf_chains, None, g)
        f = (F @ s[..., None])[..., 0]  # (Q, Nt)
        phi = W.conj().transpose(1, 2)[..., :, :, None] * f[:, None, None, :]  # (Q, R, Nr, Nt)
        phi = phi.reshape(frames, rf_chains, nr * nt)
        if whiten:
            L = torch.linalg.cholesky(W.conj().transpose(1, 2) @ W)  # (Q, R, R)
            phi = torch.linalg.solve_triangular(L, phi, upper=False)
        self.register_buffer("Phi", phi.reshape(frames * rf_chains, nr * nt).to(device))
        self.nr, self.nt, self.frames, self.rf_chains = nr, nt, frames, rf_chains
        self.x_shape = (2, nr, nt)
        self.y_shape = (2, frames, rf_chains)
        self._cache: dict = {}
        self.float_dtype = dtype or torch.float32
        common.finish(self)

    # ---------------------------------------------------------------- helpers
    @property
    def noise_var(self) -> float:
        r"""Complex noise variance :math:`\sigma_n^2 = \mathbb E|n_j|^2` of the noise model."""
        nm = self.noise_model
        if isinstance(nm, ComplexGaussianNoise):
            return float(nm.sigma) ** 2
        if type(nm).__name__ == "GaussianNoise":
            return 2 * float(nm.sigma) ** 2
        raise ValueError(f"noise_var: no complex Gaussian noise level for noise model {type(nm).__name__}")

    @property
    def m(self) -> int:
        """Complex measurements ``M = Q R``."""
        return self.Phi.shape[0]

    def _phi(self, t: torch.Tensor) -> torch.Tensor:
        ct = torch.complex128 if t.dtype == torch.float64 else torch.complex64
        key = ("phi", ct, t.device)
        if key not in self._cache:
            self._cache[key] = self.Phi.to(device=t.device, dtype=ct)
        return self._cache[key]

    def _eig(self, t: torch.Tensor):
        r"""Eigen-decomposition :math:`\Phi^H\Phi = V \operatorname{diag}(\lambda) V^H` (once, float64)."""
        key = ("eig", t.dtype, t.device)
        if key not in self._cache:
            lam, V = torch.linalg.eigh(self.Phi.conj().T @ self.Phi)
            ct = torch.complex128 if t.dtype == torch.float64 else torch.complex64
            self._cache[key] = (lam.clamp_min(0).to(device=t.device, dtype=t.dtype), V.to(device=t.device, dtype=ct))
        return self._cache[key]

    def _to_h(self, x: torch.Tensor) -> torch.Tensor:
        return to_complex(x).reshape(x.shape[0], -1)

    def _from_h(self, h: torch.Tensor) -> torch.Tensor:
        return to_channels(h.reshape(h.shape[0], self.nr, self.nt)).contiguous()

    def _to_z(self, y: torch.Tensor) -> torch.Tensor:
        return to_complex(y).reshape(y.shape[0], -1)

    def _from_z(self, z: torch.Tensor) -> torch.Tensor:
        return to_channels(z.reshape(z.shape[0], self.frames, self.rf_chains)).contiguous()

    # ---------------------------------------------------------------- operator
    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y = \Phi\,\mathrm{vec}(H)` for channels ``x`` of shape ``(B, 2, Nr, Nt)``."""
        self.check_x(x)
        return self._from_z(self._to_h(x) @ self._phi(x).T)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`\Phi^H y` for measurements ``y`` of shape ``(B, 2, Q, R)`` (the exact adjoint)."""
        self.check_y(y)
        return self._from_h(self._to_z(y) @ self._phi(y).conj())

    def A_adjoint_A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.A_adjoint(self.A(x))

    def pinv(self) -> torch.Tensor:
        r"""Moore-Penrose pseudo-inverse :math:`\Phi^\dagger` (complex128, cached)."""
        if "pinv" not in self._cache:
            self._cache["pinv"] = torch.linalg.pinv(self.Phi)
        return self._cache["pinv"]

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Least squares (minimum norm when ``M < Nr Nt``): :math:`\hat h = \Phi^\dagger y`."""
        self.check_y(y)
        ct = torch.complex128 if y.dtype == torch.float64 else torch.complex64
        P = self.pinv().to(device=y.device, dtype=ct)
        return self._from_h(self._to_z(y) @ P.T).to(y.dtype)

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""The least-squares estimate :math:`\Phi^\dagger y` (same as ``A_dagger``)."""
        return self.A_dagger(y)

    def prox_l2(self, z: torch.Tensor, y: torch.Tensor, gamma, *args, **kwargs) -> torch.Tensor:
        r"""Exact :math:`\arg\min_x \frac{\gamma}{2}\|Ax - y\|^2 + \frac12\|x - z\|^2
        = V (\gamma\Lambda + I)^{-1} V^H (\gamma \Phi^H y + z)` (deepinv's convention), by the
        cached eigen-decomposition of :math:`\Phi^H\Phi`. ``gamma``: a float or a ``(B,)`` tensor.
        """
        check_floating("z", z)
        lam, V = self._eig(z)
        g = torch.as_tensor(gamma, dtype=z.dtype, device=z.device).reshape(-1, 1)
        rhs = self._to_h(g.reshape(-1, 1, 1, 1) * self.A_adjoint(y) + z)
        c = (rhs @ V.conj()) / (g * lam + 1)  # coordinates in the eigenbasis: V^H rhs
        return self._from_h(c @ V.T)

    def real_matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        r"""The real ``(2M, 2 Nr Nt)`` matrix of ``A`` on flattened (real, imag) signals:
        :math:`\begin{pmatrix}\Re\Phi & -\Im\Phi\\ \Im\Phi & \Re\Phi\end{pmatrix}`."""
        P = self.Phi
        return torch.cat([torch.cat([P.real, -P.imag], 1), torch.cat([P.imag, P.real], 1)], 0).to(dtype)


@register("channel-hybrid-bf", "hybrid-beamforming channel training y_q = W_q^H H F_q s_q + n on (B, 2, Nr, Nt) channels")
def make_channel_hybrid_bf(
    nr: int = 16, nt: int = 16, frames: int = 64, rf_chains: int = 4, tx_rf_chains: int = 4,
    bits: int | None = None, seed: int = 0, snr_db: float | None = None, sigma: float | None = None,
    noise_model: NoiseModel | None = None, generator: torch.Generator | None = None, device=None,
    dtype: torch.dtype | None = None, whiten: bool = True, gain: float | None = None,
) -> HybridBeamforming:
    """A :class:`HybridBeamforming` operator (defaults: 16 x 16 antennas, 64 frames x 4 RF chains,
    ``M = Nr Nt = 256`` complex measurements).

    >>> op = make_channel_hybrid_bf(snr_db=10.0)
    >>> op.x_shape, op.y_shape
    ((2, 16, 16), (2, 64, 4))
    """
    return HybridBeamforming(nr, nt, frames, rf_chains, tx_rf_chains, bits, whiten, seed, sigma, snr_db,
                             noise_model, generator, device, dtype, gain)
