r"""The denoiser of masked (absorbing-state) diffusion: token conditionals given a partially
masked sequence.

A discrete prior over sequences :math:`x \in \{0, \dots, V-1\}^L` is an object with

- ``vocab_size`` (``V``), ``seq_len`` (``L``); the mask token is ``mask_index = V``;
- ``logits(z)``: for a partially masked sequence ``z`` (long, ``(B, L)``, values in
  ``[0, V]``) the (unnormalised) log-probabilities ``(B, L, V)`` of
  :math:`p_\theta(x_l \mid z)` for every position;
- optionally ``codebook`` (a :class:`~invdiff.diffusion.discrete.tokenizers.Codebook`) and
  ``x_shape``, to decode tokens to signals.

Masked diffusion models are time-agnostic (Zheng et al. 2024; Ou et al. 2024): the optimal
denoiser depends on ``z`` only, not on the time, so no ``t`` is passed. :func:`conditionals`
applies MDLM's "SUBS" parameterisation (Sahoo et al. 2024): unmasked tokens are carried over
(probability one on their value) and the mask token has probability zero,

.. math::
    p_\theta(x_l \mid z) = \begin{cases} \delta_{z_l} & z_l \ne m \\
    \mathrm{softmax}(\mathrm{logits}_\theta(z))_l & z_l = m . \end{cases}

>>> import torch
>>> from invdiff.diffusion.discrete.exact import FactorizedMixture
>>> prior = FactorizedMixture(torch.ones(1), torch.full((1, 3, 2), 0.5))
>>> conditionals(prior, torch.tensor([[0, 2, 2]])).exp()
tensor([[[1.0000, 0.0000],
         [0.5000, 0.5000],
         [0.5000, 0.5000]]], dtype=torch.float64)
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["conditionals", "check_tokens", "all_masked", "CountingPrior"]


def check_prior(prior) -> None:
    """Raise ``TypeError`` unless ``prior`` has ``vocab_size``, ``seq_len`` and ``logits``."""
    missing = [a for a in ("vocab_size", "seq_len", "logits") if not hasattr(prior, a)]
    if missing:
        raise TypeError(f"prior: expected a masked-diffusion prior with vocab_size, seq_len and logits(z); "
                        f"{type(prior).__name__} lacks {missing}")


def check_tokens(z: Tensor, vocab_size: int, seq_len: int, allow_mask: bool = True) -> None:
    """Raise ``ValueError`` unless ``z`` is a long ``(B, seq_len)`` tensor in ``[0, V]`` (or ``[0, V)``)."""
    if not isinstance(z, Tensor) or z.dtype != torch.long or z.ndim != 2 or z.shape[1] != seq_len:
        raise ValueError(f"z: expected a long tensor of shape (B, {seq_len}), got "
                         f"{getattr(z, 'dtype', type(z).__name__)} {tuple(getattr(z, 'shape', ()))}")
    top = vocab_size if allow_mask else vocab_size - 1
    if z.numel() and (int(z.min()) < 0 or int(z.max()) > top):
        raise ValueError(f"z: expected tokens in [0, {top}], got range [{int(z.min())}, {int(z.max())}]")


def all_masked(prior, n: int, device=None) -> Tensor:
    """The fully masked sequence batch ``(n, L)`` (every token ``mask_index = V``)."""
    return torch.full((n, prior.seq_len), prior.vocab_size, dtype=torch.long, device=device)


def conditionals(prior, z: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Log-probabilities ``(B, L, V)`` of :math:`p_\\theta(x_l \\mid z)` with carry-over of the
    unmasked tokens (SUBS): unmasked rows are ``0`` at their value and ``-inf`` elsewhere."""
    check_prior(prior)
    check_tokens(z, prior.vocab_size, prior.seq_len)
    V = prior.vocab_size
    logp = torch.log_softmax(prior.logits(z).to(dtype), dim=-1)
    if tuple(logp.shape) != (z.shape[0], prior.seq_len, V):
        raise ValueError(f"prior.logits: expected shape {(z.shape[0], prior.seq_len, V)}, got {tuple(logp.shape)}")
    unmasked = z != V
    onehot = torch.full_like(logp, float("-inf")).scatter_(-1, z.clamp(max=V - 1).unsqueeze(-1), 0.0)
    return torch.where(unmasked.unsqueeze(-1), onehot, logp)


class CountingPrior:
    """A prior whose ``logits`` calls are counted (``nfe``: batched evaluations)."""

    def __init__(self, prior) -> None:
        check_prior(prior)
        self.prior = prior
        self.nfe = 0

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def logits(self, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.prior.logits(z)
