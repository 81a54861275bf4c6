r"""Categorical sampling in float64 (Gumbel-max), for masked diffusion samplers.

.. math::
    k = \arg\max_v \big(\log p_v + g_v\big), \qquad g_v = -\log(-\log u_v), \quad u_v \sim U(0, 1),

with :math:`u` and the sum in float64. Zheng et al. 2024 ("Masked diffusion models are secretly
time-agnostic masked models and exploit inaccurate categorical sampling") show that float32
Gumbel noise is truncated (``-log(-log u)`` is at most about 16.6 in float32, since ``u`` can
come no closer to 1 than ``1 - 2^-24``), which lowers the effective temperature and the token
diversity of masked diffusion samples; float64 pushes the truncation to about 36.7.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> sample_categorical(torch.log(torch.tensor([[0.5, 0.5]])), g).shape
torch.Size([1])
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.utils.random import rand

__all__ = ["sample_categorical", "gumbel"]


def gumbel(shape, generator: torch.Generator | None = None, device=None) -> Tensor:
    """Standard Gumbel noise of ``shape`` in float64, drawn from ``generator``."""
    u = rand(shape, generator=generator, device=device, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))


def sample_categorical(log_probs: Tensor, generator: torch.Generator | None = None,
                       temperature: float = 1.0) -> Tensor:
    r"""One draw per row of ``log_probs`` (``(..., V)``, unnormalised log-probabilities): a long
    tensor of shape ``(...)``.

    The Gumbel-max trick in float64 whatever the dtype of ``log_probs``; ``temperature`` scales
    the log-probabilities (``0`` gives the argmax). Entries of ``-inf`` are never drawn.
    """
    if not isinstance(log_probs, Tensor) or log_probs.ndim < 1:
        raise ValueError(f"log_probs: expected a tensor of shape (..., V), got {getattr(log_probs, 'shape', log_probs)}")
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    lp = log_probs.detach().to(torch.float64)
    if temperature == 0:
        return lp.argmax(-1)
    return (lp / temperature + gumbel(lp.shape, generator, lp.device)).argmax(-1)
