r"""The MDLM training loss (Sahoo et al. 2024, "Simple and effective masked diffusion language
models", eq. 11): the continuous-time negative ELBO of masked diffusion,

.. math::
    \mathcal L(x) = \mathbb E_{t \sim U(0,1)}\, \mathbb E_{z_t \sim q(\cdot \mid x)}
    \Big[ \frac{-\alpha'_t}{1 - \alpha_t} \sum_{l:\, z_{t,l} = m} -\log p_\theta(x_l \mid z_t) \Big]
    \;\ge\; -\log p_\theta(x) ,

with equality when :math:`p_\theta` holds the exact conditionals of a distribution :math:`p`
(then :math:`\mathcal L(x) = -\log p(x)`: the bound is an average over unmasking orders of
exact autoregressive factorisations; Ou et al. 2024). Time is drawn with MDLM's
low-discrepancy sampler (stratified :math:`t_i = (u + i)/B \bmod 1`), clamped to
``[t_min, 1]``.

>>> import torch
>>> from invdiff.diffusion.discrete.exact import random_mixture
>>> prior = random_mixture(2, 4, 3, generator=torch.Generator().manual_seed(0))
>>> x = prior.sample(8, torch.Generator().manual_seed(1))
>>> mdlm_loss(prior, x, generator=torch.Generator().manual_seed(2)).shape
torch.Size([8])
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.diffusion.discrete.denoiser import check_prior, check_tokens
from invdiff.diffusion.discrete.schedules import MaskingSchedule, make_schedule
from invdiff.utils.random import rand

__all__ = ["mdlm_loss", "mask_tokens"]


def mask_tokens(x: Tensor, t: Tensor, schedule: MaskingSchedule, mask_index: int,
                generator: torch.Generator | None = None) -> Tensor:
    r"""A draw of :math:`z_t \sim q(\cdot \mid x)`: each token masked with probability :math:`1 - \alpha_t` (``t`` is ``(B,)``)."""
    u = rand(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    masked = u < (1 - schedule.alpha(t.double())).unsqueeze(1)
    return torch.where(masked, torch.full_like(x, mask_index), x)


def mdlm_loss(prior, x: Tensor, schedule: str | MaskingSchedule = "loglinear",
              generator: torch.Generator | None = None, t_min: float = 1e-4,
              t: Tensor | None = None) -> Tensor:
    """Per-sequence MDLM loss ``(B,)`` (nats) of clean tokens ``x`` ``(B, L)`` under ``prior.logits``.

    One time and one mask per sequence (average over a batch or over repeats for the
    expectation); ``t`` overrides the low-discrepancy times. Differentiable in the prior's
    parameters.
    """
    check_prior(prior)
    check_tokens(x, prior.vocab_size, prior.seq_len, allow_mask=False)
    if not 0 < t_min < 1:
        raise ValueError(f"t_min: expected in (0, 1), got {t_min}")
    schedule = make_schedule(schedule)
    B = x.shape[0]
    if t is None:
        u0 = rand((1,), generator=generator, device=x.device, dtype=torch.float64)
        t = torch.remainder(u0 + torch.arange(B, device=x.device, dtype=torch.float64) / B, 1.0)
    t = t.to(device=x.device, dtype=torch.float64).clamp(t_min, 1.0)
    z = mask_tokens(x, t, schedule, prior.vocab_size, generator)
    logp = torch.log_softmax(prior.logits(z), dim=-1)
    nll = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, L)
    nll = (nll * (z == prior.vocab_size)).sum(1)
    return schedule.weight(t).to(nll.dtype) * nll
