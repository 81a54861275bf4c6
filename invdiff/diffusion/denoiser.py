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
