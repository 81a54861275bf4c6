r"""Exact posteriors of discrete priors by enumeration, and the total-variation distance of
(weighted) samples to them; the reference of the discrete samplers' tests and benchmark.

.. math::
    p(x \mid y) = \frac{p(x)\, \exp(-\tfrac12 \|r(\mathrm{dec}(x))\|^2)}
    {\sum_{x'} p(x')\, \exp(-\tfrac12 \|r(\mathrm{dec}(x'))\|^2)}, \qquad
    \mathrm{TV}(\hat p, p) = \tfrac12 \sum_x |\hat p(x) - p(x)|,

over every sequence of :math:`\{0..V-1\}^L` (small problems), or over a finite support (the
members of an empirical set, whose smoothed oracle puts a vanishing mass elsewhere).

>>> import torch
>>> from invdiff.diffusion.discrete import random_mixture, intensity_quantizer
>>> from invdiff.operators import Matrix
>>> prior = random_mixture(2, 3, 2, generator=torch.Generator().manual_seed(0), codebook=intensity_quantizer(2, (3,)))
>>> support, probs = exact_posterior(prior, torch.zeros(1, 1, dtype=torch.float64), Matrix(torch.ones(1, 3), sigma=0.5))
>>> support.shape, float(probs.sum())
(torch.Size([8, 3]), 1.0)
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.diffusion.discrete.exact import all_sequences
from invdiff.samplers.problem import make_problem

__all__ = ["exact_posterior", "tv_distance"]


def exact_posterior(prior, y: Tensor, physics, support: Tensor | None = None, sigma_y=None,
                    chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """``(support (S, L), probs (S,))``: the posterior of one measurement ``y`` ``(1, *y_shape)``
    over ``support`` (default: every sequence), with ``prior.log_prob``."""
    if y.shape[0] != 1:
        raise ValueError(f"y: expected one measurement (batch 1), got batch {y.shape[0]}")
    if support is None:
        support = all_sequences(prior.vocab_size, prior.seq_len, device=y.device)
    logpost = []
    for s in range(0, support.shape[0], chunk):
        part = support[s:s + chunk]
        problem = make_problem(y, physics, part.shape[0], sigma_y=sigma_y, x_shape=prior.codebook.x_shape)
        x = prior.codebook.decode(part, dtype=y.dtype)
        logpost.append(prior.log_prob(part).double() - problem.nll(x).double())
    logpost = torch.cat(logpost)
    return support, torch.softmax(logpost, 0)


def _index(tokens: Tensor, vocab_size: int) -> Tensor:
    """Base-V integer code of each row (rows up to V**L < 2**63)."""
    powers = vocab_size ** torch.arange(tokens.shape[1] - 1, -1, -1, device=tokens.device, dtype=torch.long)
    return (tokens * powers).sum(1)


def tv_distance(tokens: Tensor, support: Tensor, probs: Tensor, vocab_size: int,
                weights: Tensor | None = None) -> float:
    """TV between the (weighted) empirical distribution of ``tokens`` ``(n, L)`` and ``probs`` on
    ``support`` ``(S, L)``; samples outside the support count as mass the exact law does not have."""
    n = tokens.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64) if weights is None else (weights.double() / weights.double().sum())
    keys_s = _index(support, vocab_size)
    keys_t = _index(tokens, vocab_size)
    order = torch.argsort(keys_s)
    sorted_keys = keys_s[order]
    pos = torch.searchsorted(sorted_keys, keys_t).clamp(max=len(sorted_keys) - 1)
    inside = sorted_keys[pos] == keys_t
    emp = torch.zeros(len(sorted_keys), dtype=torch.float64).index_add_(0, pos[inside], w[inside])
    outside = float(w[~inside].sum())
    return 0.5 * (float((emp - probs.double()[order]).abs().sum()) + outside)
