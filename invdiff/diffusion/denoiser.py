"""The prior interface: a denoiser ``D(x, sigma) = E[x0 | x0 + sigma * eps = x]``.

This is the convention of deepinv's ``Denoiser``, EDM and k-diffusion, so a deepinv denoiser
is an invdiff prior without a wrapper. ``sigma`` is a float, a 0-d tensor or a ``(B,)`` tensor.
By Tweedie's formula the score of the noisy density is

.. math::
    \\nabla_x \\log p_\\sigma(x) = \\frac{D(x, \\sigma) - x}{\\sigma^2}.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from invdiff.utils.random import randn


@runtime_checkable
class Denoiser(Protocol):
    """Anything callable as ``D(x, sigma) -> x0_hat`` with ``x0_hat.shape == x.shape``."""

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor: ...


def expand_sigma(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as a tensor of shape ``(B, 1, ..., 1)`` that broadcasts against ``x`` (B, ...).

    Follows ``x``'s device and dtype. Accepts a float, a 0-d tensor, or a ``(B,)`` tensor.

    >>> expand_sigma(0.5, torch.zeros(3, 2, 4, 4)).shape
    torch.Size([3, 1, 1, 1])
    """
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    elif s.shape != (x.shape[0],):
        raise ValueError(f"sigma: expected a float or a tensor of shape ({x.shape[0]},), got shape {tuple(s.shape)}")
    return s.reshape(-1, *([1] * (x.ndim - 1)))


def score(denoiser: Denoiser, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The score ``(D(x, sigma) - x) / sigma**2`` of any denoiser."""
    s = expand_sigma(sigma, x)
    return (denoiser(x, sigma) - x) / s**2


def gaussian_fit(
    denoiser: Denoiser,
    x_shape: tuple[int, ...],
    sigma: float,
    n: int = 128,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, float]:
    r"""Isotropic Gaussian fit :math:`\mathcal N(m, s^2 I)` of a prior, read off its denoiser at a large ``sigma``.

    For data :math:`\mathcal N(m, \Sigma)` the denoiser is affine,
    :math:`D(x, \sigma) = m + \Sigma (\Sigma + \sigma^2 I)^{-1} (x - m)`. A least-squares fit
    :math:`D(x_k, \sigma) \approx a + \beta x_k` with a scalar slope over ``n`` draws
    :math:`x_k = \sigma z_k` gives

    .. math::
        \beta = \frac{\sum_k \langle D_k - \bar D, x_k - \bar x\rangle}{\sum_k \|x_k - \bar x\|^2},
        \qquad m = \frac{\bar D - \beta \bar x}{1 - \beta}, \qquad
        s^2 = \frac{\beta\, \sigma^2}{1 - \beta},

    exact for isotropic Gaussian data; for any prior, :math:`s^2 \to \mathrm{tr}\,\Sigma / d` (the
    mean per-coordinate variance) as :math:`\sigma / s \to \infty`, with a relative bias of order
    :math:`\lambda_{max}(\Sigma) / \sigma^2`. One batched denoiser call. Used to anneal likelihoods
    along the diffusion (:class:`invdiff.samplers.SMCEnsemble`).

    >>> from invdiff.diffusion.gmm import Gaussian
    >>> m, s2 = gaussian_fit(Gaussian(torch.full((4,), 3.0, dtype=torch.float64), 0.25), (4,), 80.0,
    ...                      dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> round(float(m[0]), 6), round(s2, 6)
    (3.0, 0.25)
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n: expected an int >= 2, got {n!r}")
    if not (sigma > 0 and sigma < float("inf")):
        raise ValueError(f"sigma: expected a finite sigma > 0, got {sigma!r}")
    x = sigma * randn((n, *x_shape), generator, device, dtype)
    with torch.no_grad():
        d = denoiser(x, sigma)
    xc, dc = x - x.mean(0), d - d.mean(0)
    eps = torch.finfo(dtype).eps
    beta = min(max(float((xc * dc).sum() / (xc * xc).sum()), eps), 1.0 - eps)
    m = (d.mean(0) - beta * x.mean(0)) / (1.0 - beta)
    return m, beta * sigma**2 / (1.0 - beta)
