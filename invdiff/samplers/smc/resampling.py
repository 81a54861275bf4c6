"""Weights and resampling of weighted particle systems (reusable by any SMC sampler).

Log-weights stay in log space; ``ess`` is the effective sample size; the resamplers return
ancestor indices per measurement column (systematic: Douc & Cappe 2005).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from invdiff.utils.random import rand

__all__ = ["Resampling", "ess", "resample", "systematic_resample", "multinomial_resample", "gather_rows", "RESAMPLERS"]

Resampling = Literal["systematic", "multinomial"]


def ess(log_weights: Tensor) -> Tensor:
    """Effective sample size :math:`(\\sum_k w_k)^2 / \\sum_k w_k^2` along dim 0 of unnormalised log-weights.

    >>> ess(torch.zeros(4, 2))
    tensor([4., 4.])
    """
    w = torch.softmax(log_weights, dim=0)
    return 1.0 / (w * w).sum(0)


def _check_weights(weights: Tensor) -> Tensor:
    if weights.ndim == 1:
        weights = weights[:, None]
    if weights.ndim != 2:
        raise ValueError(f"weights: expected shape (N,) or (N, B), got {tuple(weights.shape)}")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("weights: expected finite non-negative values")
    return weights / weights.sum(0, keepdim=True)


def _inverse_cdf(weights: Tensor, u: Tensor) -> Tensor:
    """Indices ``k`` with ``cdf[k-1] <= u < cdf[k]`` per column: weights (N, B), u (M, B) -> (M, B)."""
    cdf = torch.cumsum(weights, 0)
    cdf = cdf / cdf[-1:]
    idx = torch.searchsorted(cdf.T.contiguous(), u.T.contiguous(), right=True).T
    return idx.clamp_max(weights.shape[0] - 1)


def systematic_resample(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Systematic resampling: ancestor indices (N, B) for normalised or unnormalised weights (N, B).

    One uniform per column, :math:`u_k = (k + U) / N`; particle ``j`` is copied
    :math:`\\lfloor N w_j \\rfloor` or :math:`\\lceil N w_j \\rceil` times (lowest variance of the
    standard schemes; Douc & Cappe 2005).

    >>> systematic_resample(torch.tensor([0.0, 1.0, 0.0]))[:, 0]
    tensor([1, 1, 1])
    """
    w = _check_weights(weights)
    N, B = w.shape
    u = (torch.arange(N, dtype=w.dtype, device=w.device)[:, None] + rand((1, B), generator, w.device, w.dtype)) / N
    return _inverse_cdf(w, u)


def multinomial_resample(weights: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Multinomial resampling: N independent draws per column from the weights (N, B)."""
    w = _check_weights(weights)
    return _inverse_cdf(w, rand(w.shape, generator, w.device, w.dtype))


def resample(log_weights: Tensor, method: Resampling = "systematic", generator: torch.Generator | None = None) -> Tensor:
    """Ancestor indices (N, B) from unnormalised log-weights (N, B) by ``method``."""
    if method not in RESAMPLERS:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLERS)}, got {method!r}")
    return RESAMPLERS[method](torch.softmax(log_weights, dim=0), generator)


RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def gather_rows(problem, idx: Tensor, *tensors: Tensor) -> list[Tensor]:
    """Reindex rows ``k * B + b`` of each (N*B, ...) tensor by ancestors ``idx`` (N, B)."""
    B = problem.batch
    rows = (idx * B + torch.arange(B, device=idx.device)[None, :]).reshape(-1)
    return [t[rows] for t in tensors]
