"""Exact Gaussian-mixture priors: denoiser, score, samples, density and linear-Gaussian posterior.

A Gaussian mixture

.. math::
    p(x_0) = \\sum_{k=1}^K w_k \\, \\mathcal N(x_0; m_k, C_k)

is closed under Gaussian noising and under linear-Gaussian conditioning, so everything a
diffusion posterior sampler needs is available in closed form. It is the ground truth that
solvers and samplers are tested against (the MCGdiff benchmark of Cardoso et al. 2023 uses it),
and, with zero covariances, the *empirical* prior of a finite set of signals, whose denoiser is
the posterior mean over that set.

Noisy marginal (``x = x0 + sigma * eps``):

.. math::
    p_\\sigma(x) = \\sum_k w_k \\, \\mathcal N(x; m_k, C_k + \\sigma^2 I),
    \\qquad
    r_k(x) = \\frac{w_k \\mathcal N(x; m_k, C_k + \\sigma^2 I)}{p_\\sigma(x)}

Denoiser (posterior mean, Tweedie) and score:

.. math::
    D(x, \\sigma) = \\sum_k r_k(x) \\left[ m_k + C_k (C_k + \\sigma^2 I)^{-1} (x - m_k) \\right],
    \\qquad
    \\nabla_x \\log p_\\sigma(x) = -\\sum_k r_k(x) (C_k + \\sigma^2 I)^{-1} (x - m_k)
    = \\frac{D(x, \\sigma) - x}{\\sigma^2}.

Numerics. Responsibilities are a log-sum-exp (softmax) over exact log densities. Scalar and
diagonal covariances use closed forms without any ``d x d`` matrix. A full covariance is
factorised once, ``C_k = U_k \\operatorname{diag}(\\lambda_k) U_k^T`` (``torch.linalg.eigh``),
so that ``C_k + \\sigma^2 I = U_k \\operatorname{diag}(\\lambda_k + \\sigma^2) U_k^T`` for *every*
``sigma``: one factorisation serves a batch of different noise levels, singular (even zero)
covariances need no special case, and every solve is a division by ``lambda + sigma^2 > 0``.
Distances ``x - m_k`` are formed explicitly (no ``|x|^2 - 2 x.m + |m|^2`` cancellation), in
batch chunks to bound memory. :meth:`GaussianMixture.posterior` uses Cholesky solves with the
``m x m`` innovation covariance and the Joseph form of the Kalman update (stays PSD).

Example
-------
>>> import torch
>>> from invdiff.diffusion.gmm import GaussianMixture, Gaussian
>>> prior = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.25)
>>> x = prior.sample(5, generator=torch.Generator().manual_seed(0))
>>> prior(x, 0.5).shape
torch.Size([5, 2])
>>> g = Gaussian(torch.zeros(3), 4.0)          # K = 1: D(x, s) = 4 / (4 + s^2) x
>>> torch.allclose(g(torch.ones(1, 3), 2.0), torch.full((1, 3), 0.5))
True
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from invdiff.utils import check_finite, check_floating, check_positive, check_shape
from invdiff.utils.random import rand, randn

__all__ = ["GaussianMixture", "Gaussian"]

_LOG_2PI = math.log(2.0 * math.pi)
# Largest number of elements of the (chunk, K, d) difference tensor formed at once.
_CHUNK_ELEMENTS = 1 << 24


class GaussianMixture(torch.nn.Module):
    """Exact Gaussian-mixture prior ``sum_k w_k N(m_k, C_k)`` on signals of shape ``x_shape``.

    Calling the object is the exact denoiser ``D(x, sigma) = E[x0 | x0 + sigma eps = x]``.

    Parameters
    ----------
    weights : (K,) tensor
        Non-negative component weights (normalised here; need not sum to 1).
    means : (K, *x_shape) tensor
        Component means. Signals may have any shape; they are flattened to ``d`` internally.
    covs : float, (K,), (K, d) / (K, *x_shape), or (K, d, d)
        Covariances: one variance for all (float), one variance per component (scalar
        ``c_k I``), a diagonal per component, or full PSD matrices. Zeros are allowed: a
        zero-covariance mixture is the empirical prior of the set of means.

    Attributes
    ----------
    x_shape : tuple
        Shape of one signal.
    dim : int
        ``d = prod(x_shape)``.
    kind : str
        ``"scalar"``, ``"diag"`` or ``"full"``.

    Example
    -------
    >>> import torch
    >>> images = torch.rand(300, 1, 32, 32)                 # a finite set of signals
    >>> prior = GaussianMixture(torch.ones(300), images, 0.0)
    >>> prior(images[:4] + 0.01 * torch.randn(4, 1, 32, 32), 0.01).shape
    torch.Size([4, 1, 32, 32])
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: float | torch.Tensor):
        super().__init__()
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        dtype, device = means.dtype, means.device
        weights = torch.as_tensor(weights, dtype=dtype, device=device)
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(f"weights: expected a non-empty 1-D tensor (K,), got shape {tuple(weights.shape)}")
        K = weights.shape[0]
        if means.ndim < 2 or means.shape[0] != K:
            raise ValueError(f"means: expected shape (K={K}, *x_shape), got {tuple(means.shape)}")
        check_finite("weights", weights)
        check_finite("means", means)
        if bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights: expected non-negative values with a positive sum, got {weights}")
        self.x_shape = tuple(means.shape[1:])
        d = math.prod(self.x_shape)
        self.dim = d

        covs_t = torch.as_tensor(covs, dtype=dtype, device=device)
        check_finite("covs", covs_t)
        if covs_t.ndim == 0:
            covs_t = covs_t.expand(K).clone()
        if covs_t.shape == (K,):
            kind, lam, U = "scalar", covs_t, None
        elif covs_t.shape == (K, d, d):
            kind = "full"
            asym = (covs_t - covs_t.transpose(-1, -2)).abs().amax()
            scale = covs_t.abs().amax().clamp_min(torch.finfo(dtype).tiny)
            if float(asym) > 1e-6 * float(scale):
                raise ValueError(f"covs: expected symmetric matrices, got max |C - C^T| = {float(asym):.3g}")
            lam, U = torch.linalg.eigh(0.5 * (covs_t + covs_t.transpose(-1, -2)))
            tol = 1e3 * torch.finfo(dtype).eps * lam.abs().amax(-1, keepdim=True)
            if bool((lam < -tol).any()):
                raise ValueError(f"covs: expected positive semi-definite matrices, got eigenvalue {float(lam.min()):.3g}")
            lam = lam.clamp_min(0.0)
        elif covs_t.shape == (K, d) or covs_t.shape == (K, *self.x_shape):
            kind, lam, U = "diag", covs_t.reshape(K, d), None
        else:
            raise ValueError(
                f"covs: expected a float, shape (K,)=({K},), (K, d)=({K}, {d}), (K, *x_shape)={(K, *self.x_shape)} "
                f"or (K, d, d)=({K}, {d}, {d}), got {tuple(covs_t.shape)}"
            )
        check_positive("covs (variances / eigenvalues)", lam, allow_zero=True)
        self.kind = kind
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))
        self.register_buffer("means_flat", means.reshape(K, d).clone())
        # lam: (K,) variances (scalar), or (K, d) diagonal / eigenvalues (diag, full).
        self.register_buffer("lam", lam.clone())
        self.register_buffer("U", None if U is None else U.clone())

    # ------------------------------------------------------------------ properties
    @property
    def n_components(self) -> int:
        return self.log_weights.shape[0]

    @property
    def weights(self) -> torch.Tensor:
        """Normalised component weights, (K,)."""
        return self.log_weights.exp()

    @property
    def means(self) -> torch.Tensor:
        """Component means, (K, *x_shape)."""
        return self.means_flat.reshape(self.n_components, *self.x_shape)

    @property
    def covs(self) -> torch.Tensor:
        """Component covariances as full matrices, (K, d, d) (builds them: avoid for large d)."""
        return self._full_covs(self.lam, self.U)

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean ``sum_k w_k m_k``, shape ``x_shape``."""
        return (self.weights @ self.means_flat).reshape(self.x_shape)

    @property
    def covariance(self) -> torch.Tensor:
        """Mixture covariance ``sum_k w_k (C_k + (m_k - mu)(m_k - mu)^T)``, (d, d) on flattened signals."""
        w = self.weights
        dm = self.means_flat - w @ self.means_flat
        between = torch.einsum("k,ki,kj->ij", w, dm, dm)
        if self.kind == "scalar":
            return between + (w @ self.lam) * torch.eye(self.dim, dtype=dm.dtype, device=dm.device)
        if self.kind == "diag":
            return between + torch.diag(w @ self.lam)
        return between + torch.einsum("k,kij->ij", w, self.covs)

    def _full_covs(self, lam: torch.Tensor, U: torch.Tensor | None) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=lam.dtype, device=lam.device)
        if self.kind == "scalar":
            return lam[:, None, None] * eye
        if self.kind == "diag":
            return torch.diag_embed(lam)
        return (U * lam[:, None, :]) @ U.transpose(-1, -2)

    def extra_repr(self) -> str:
        return f"K={self.n_components}, x_shape={self.x_shape}, covs={self.kind}"

    # ------------------------------------------------------------------ input checks
    def _check_x(self, x: torch.Tensor) -> None:
        check_floating("x", x)
        check_shape("x", x, (None, *self.x_shape))
        check_finite("x", x)

    def _sigma2(self, sigma, x: torch.Tensor, allow_zero: bool) -> torch.Tensor:
        """``sigma**2`` as a (B, 1) tensor on x's device/dtype, after checks."""
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.ndim >= 1 and s.numel() == 1:
            s = s.reshape(())
        elif s.ndim > 1 and s.shape[0] == x.shape[0] and s.numel() == x.shape[0]:
            s = s.reshape(-1)  # (B, 1, ..., 1), as expand_sigma returns
        if s.ndim != 0 and s.shape != (x.shape[0],):
            raise ValueError(f"sigma: expected a float or a tensor of shape ({x.shape[0]},), got shape {tuple(s.shape)}")
        check_finite("sigma", s)
        check_positive("sigma", s, allow_zero=allow_zero)
        return (s**2).expand(x.shape[0]).reshape(-1, 1)

    def _params(self, x: torch.Tensor):
        dt, dev = x.dtype, x.device
        U = None if self.U is None else self.U.to(dev, dt)
        return self.log_weights.to(dev, dt), self.means_flat.to(dev, dt), self.lam.to(dev, dt), U

    # ------------------------------------------------------------------ core
    def _evaluate(self, x: torch.Tensor, s2: torch.Tensor, what: str) -> torch.Tensor:
        """Evaluate ``what`` in {"denoise", "score", "resp", "logp"} for flattened x (B, d), s2 (B, 1)."""
        logw, M, lam, U = self._params(x)
        K, d = M.shape
        chunk = max(1, _CHUNK_ELEMENTS // max(1, K * d))
        outs = [self._evaluate_chunk(xc, sc, what, logw, M, lam, U) for xc, sc in zip(x.split(chunk), s2.split(chunk))]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _evaluate_chunk(self, x, s2, what, logw, M, lam, U):
        d = M.shape[1]
        diff = x[:, None, :] - M[None]  # (b, K, d)
        z = diff if U is None else torch.einsum("kji,bkj->bki", U, diff)  # eigen-coordinates
        if self.kind == "scalar":
            v = lam[None, :] + s2  # (b, K)
            maha = (z * z).sum(-1) / v
            logdet = d * torch.log(v)
        else:
            v = lam[None] + s2[:, :, None]  # (b, K, d)
            maha = (z * z / v).sum(-1)
            logdet = torch.log(v).sum(-1)
        logits = logw + -0.5 * (maha + logdet + d * _LOG_2PI)  # (b, K)
        if what == "logp":
            return torch.logsumexp(logits, dim=-1)
        r = torch.softmax(logits, dim=-1)
        if what == "resp":
            return r
        # coefficient of (x - m_k) in eigen-coordinates: lam/(lam+s^2) (denoiser) or -1/(lam+s^2) (score)
        coef = lam / v if what == "denoise" else -1.0 / v
        if self.kind == "scalar":
            out = torch.einsum("bk,bkd->bd", r * coef, z)
        elif U is None:
            out = (r[..., None] * coef * z).sum(1)
        else:
            out = torch.einsum("kij,bkj->bi", U, r[..., None] * coef * z)
        return out + r @ M if what == "denoise" else out

    # ------------------------------------------------------------------ public API
    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact denoiser ``D(x, sigma) = E[x0 | x0 + sigma eps = x]``, x of shape (B, *x_shape), sigma > 0."""
        self._check_x(x)
        s2 = self._sigma2(sigma, x, allow_zero=False)
        return self._evaluate(x.reshape(x.shape[0], -1), s2, "denoise").reshape(x.shape)

    def prior(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Alias of calling the object: the exact denoiser ``D(x, sigma)``."""
        return self.forward(x, sigma)

    def score(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact score ``grad_x log p_sigma(x) = -sum_k r_k (C_k + sigma^2 I)^{-1} (x - m_k)``, sigma > 0."""
        self._check_x(x)
        s2 = self._sigma2(sigma, x, allow_zero=False)
        return self._evaluate(x.reshape(x.shape[0], -1), s2, "score").reshape(x.shape)

    def responsibilities(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x) = P(k | x0 + sigma eps = x)``, (B, K), sigma > 0."""
        self._check_x(x)
        s2 = self._sigma2(sigma, x, allow_zero=False)
        return self._evaluate(x.reshape(x.shape[0], -1), s2, "resp")

    def log_prob(self, x: torch.Tensor, sigma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Log density ``log p_sigma(x)`` of the noisy marginal, (B,). ``sigma = 0`` needs regular covariances."""
        self._check_x(x)
        s2 = self._sigma2(sigma, x, allow_zero=True)
        if bool((s2 == 0).any()) and bool((self.lam == 0).any()):
            raise ValueError("log_prob: sigma = 0 needs non-singular covariances (some are singular); pass sigma > 0")
        return self._evaluate(x.reshape(x.shape[0], -1), s2, "logp")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact samples ``x0 ~ p``, shape (n, *x_shape), on the mixture's device and dtype."""
        return self.sample_components(n, generator=generator)[0]

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact samples (n, *x_shape) and the component index k of each, (n,) (for mode-weight checks)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        dt, dev = self.means_flat.dtype, self.means_flat.device
        cdf = torch.cumsum(self.weights, 0)
        u = rand((n,), generator=generator, device=dev, dtype=dt) * cdf[-1]
        k = torch.searchsorted(cdf, u, right=True).clamp_max(self.n_components - 1)
        eps = randn((n, self.dim), generator=generator, device=dev, dtype=dt)
        std = self.lam[k].sqrt()
        if self.kind == "scalar":
            noise = std[:, None] * eps
        elif self.U is None:
            noise = std * eps
        else:
            noise = torch.einsum("nij,nj->ni", self.U[k], std * eps)
        return (self.means_flat[k] + noise).reshape(n, *self.x_shape), k

    def posterior(self, A, y: torch.Tensor, sigma_y: float | torch.Tensor) -> "GaussianMixture":
        """Exact posterior ``p(x0 | y)`` for ``y = A x0 + sigma_y n``, again a :class:`GaussianMixture`.

        .. math::
            S_k = A C_k A^T + \\sigma_y^2 I, \\quad
            w_k' \\propto w_k \\mathcal N(y; A m_k, S_k), \\quad
            G_k = C_k A^T S_k^{-1},

            m_k' = m_k + G_k (y - A m_k), \\quad
            C_k' = (I - G_k A) C_k (I - G_k A)^T + \\sigma_y^2 G_k G_k^T .

        (Kalman update in Joseph form; zero-covariance components stay zero-covariance and only
        their weights change.)

        Parameters
        ----------
        A : (m, d) tensor, or an object with a ``.matrix`` attribute (e.g. ``invdiff.operators.Matrix``)
            acting on flattened signals.
        y : (m,) or (1, m) tensor
        sigma_y : float > 0

        Example
        -------
        >>> import torch
        >>> prior = Gaussian(torch.zeros(2), 1.0)
        >>> post = prior.posterior(torch.eye(2), torch.tensor([1.0, -1.0]), 1.0)
        >>> post.mean, post.covariance.diagonal()
        (tensor([ 0.5000, -0.5000]), tensor([0.5000, 0.5000]))
        """
        if not isinstance(A, torch.Tensor):
            if hasattr(A, "matrix"):
                A = A.matrix
            else:
                raise TypeError(f"A: expected an (m, d) tensor or an object with a .matrix attribute, got {type(A).__name__}")
        dt, dev = self.means_flat.dtype, self.means_flat.device
        A = torch.as_tensor(A).to(dev, dt)
        if A.ndim != 2 or A.shape[1] != self.dim:
            raise ValueError(f"A: expected shape (m, d={self.dim}), got {tuple(A.shape)}")
        m = A.shape[0]
        y = torch.as_tensor(y).to(dev, dt)
        if y.shape not in ((m,), (1, m)):
            raise ValueError(f"y: expected shape ({m},) or (1, {m}), got {tuple(y.shape)}")
        y = y.reshape(m)
        check_finite("y", y)
        check_finite("A", A)
        sy2 = torch.as_tensor(sigma_y, dtype=dt, device=dev)
        if sy2.ndim != 0:
            raise ValueError(f"sigma_y: expected a float, got shape {tuple(sy2.shape)}")
        check_positive("sigma_y", sy2)
        sy2 = sy2**2

        M, logw = self.means_flat, self.log_weights
        resid = y - M @ A.T  # (K, m)
        eye_m = torch.eye(m, dtype=dt, device=dev)
        if bool((self.lam == 0).all()):
            # all point masses: N(y; A m_k, sigma_y^2 I), nothing else changes
            loglik = -0.5 * ((resid**2).sum(-1) / sy2 + m * torch.log(sy2) + m * _LOG_2PI)
            return GaussianMixture(torch.softmax(logw + loglik, 0), self.means, torch.zeros(self.n_components, dtype=dt, device=dev))
        C = self.covs  # (K, d, d)
        AC = A @ C  # (K, m, d)
        S = AC @ A.T + sy2 * eye_m  # (K, m, m)
        L = torch.linalg.cholesky(S)
        alpha = torch.cholesky_solve(resid[..., None], L)[..., 0]  # S^{-1} (y - A m_k)
        logdet = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        loglik = -0.5 * ((resid * alpha).sum(-1) + logdet + m * _LOG_2PI)
        G = torch.cholesky_solve(AC, L).transpose(-1, -2)  # (K, d, m) = C A^T S^{-1}
        new_means = M + (AC.transpose(-1, -2) @ alpha[..., None])[..., 0]
        I_GA = torch.eye(self.dim, dtype=dt, device=dev) - G @ A
        new_C = I_GA @ C @ I_GA.transpose(-1, -2) + sy2 * G @ G.transpose(-1, -2)
        new_C = 0.5 * (new_C + new_C.transpose(-1, -2))
        return GaussianMixture(torch.softmax(logw + loglik, 0), new_means.reshape(-1, *self.x_shape), new_C)


def Gaussian(mean: torch.Tensor, cov: float | torch.Tensor) -> GaussianMixture:
    """The Gaussian prior ``N(mean, cov)`` as a one-component :class:`GaussianMixture`.

    ``cov`` is a float / 0-d tensor (``cov * I``), a diagonal of shape ``mean.shape`` or ``(d,)``,
    or a full ``(d, d)`` matrix with ``d = mean.numel()``. Its denoiser is linear:

    .. math::
        D(x, \\sigma) = \\mu + C (C + \\sigma^2 I)^{-1} (x - \\mu).

    >>> import torch
    >>> g = Gaussian(torch.zeros(2), torch.tensor([1.0, 3.0]))
    >>> g(torch.ones(1, 2), 1.0)
    tensor([[0.5000, 0.7500]])
    """
    mean = torch.as_tensor(mean)
    if not mean.is_floating_point():
        mean = mean.to(torch.get_default_dtype())
    cov = torch.as_tensor(cov, dtype=mean.dtype, device=mean.device)
    d = mean.numel()
    if cov.ndim == 0:
        covs = cov.reshape(1)
    elif cov.shape == (d, d):
        covs = cov[None]
    elif cov.shape == mean.shape or cov.shape == (d,):
        covs = cov.reshape(1, d)
    else:
        raise ValueError(f"cov: expected a float, shape {tuple(mean.shape)} / ({d},) (diagonal) or ({d}, {d}), got {tuple(cov.shape)}")
    return GaussianMixture(torch.ones(1, dtype=mean.dtype, device=mean.device), mean[None], covs)
