r"""Unconditional sampling of masked diffusion: ancestral and first-hitting / confidence-ordered.

Ancestral (Sahoo et al. 2024, MDLM eq. 7): from :math:`t` to :math:`s < t` each masked token
is unmasked independently with probability :math:`(\alpha_s - \alpha_t)/(1 - \alpha_t)`, its
value drawn from :math:`p_\theta(x_l \mid z_t)`; one network call per step (NFE = ``steps``).

First-hitting (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked
models and exploit inaccurate categorical sampling", Alg. 1): since the denoiser does not
depend on time, the reverse chain only needs the order in which tokens are unmasked; with
``tokens_per_step = 1`` and ``order="random"`` it unmasks one uniformly chosen masked token per
call, which is an exact sample of the model's joint (NFE = ``L``). ``tokens_per_step = k``
unmasks ``k`` tokens per call from the same conditionals (NFE = ``ceil(L / k)``, an
approximation: the ``k`` tokens are drawn independently). ``order="confidence"`` unmasks the
positions whose drawn token has the highest probability first (the MaskGIT / LLaDA heuristic;
it lowers diversity and is not a sample of the model). All categorical draws are float64.

>>> import torch
>>> from invdiff.diffusion.discrete.exact import random_mixture
>>> prior = random_mixture(2, 6, 3, generator=torch.Generator().manual_seed(0))
>>> out = ancestral_sample(prior, 5, steps=4, generator=torch.Generator().manual_seed(0))
>>> out.tokens.shape, out.nfe
(torch.Size([5, 6]), 4)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.diffusion.discrete.categorical import gumbel, sample_categorical
from invdiff.diffusion.discrete.denoiser import CountingPrior, all_masked, check_prior, conditionals
from invdiff.diffusion.discrete.schedules import MaskingSchedule, make_schedule
from invdiff.utils.random import rand

__all__ = ["DiscreteSample", "ancestral_sample", "first_hitting_sample", "unmask_step"]


@dataclass
class DiscreteSample:
    """Tokens ``(n, L)`` and the number of network calls ``nfe``."""

    tokens: Tensor
    nfe: int


def unmask_step(logp: Tensor, z: Tensor, p_unmask: Tensor | float, mask_index: int,
                generator: torch.Generator | None = None) -> Tensor:
    """One ancestral step: every masked token of ``z`` unmasked with probability ``p_unmask``
    (a float or ``(B,)``), its value drawn from ``logp`` ``(B, L, V)`` (float64 Gumbel-max)."""
    x0 = sample_categorical(logp, generator)
    p = torch.as_tensor(p_unmask, dtype=torch.float64, device=z.device).reshape(-1, 1)
    reveal = (z == mask_index) & (rand(z.shape, generator=generator, device=z.device, dtype=torch.float64) < p)
    return torch.where(reveal, x0, z)


def ancestral_sample(prior, n: int, steps: int = 64, schedule: str | MaskingSchedule = "loglinear",
                     generator: torch.Generator | None = None, z: Tensor | None = None) -> DiscreteSample:
    """``n`` sequences by ancestral sampling over ``steps`` uniform time steps (see the module doc).
    ``z`` (``(n, L)``, partially masked) starts from a given state instead of all-masked."""
    check_prior(prior)
    schedule = make_schedule(schedule)
    counted = CountingPrior(prior)
    z = all_masked(prior, n) if z is None else z.clone()
    t = schedule.grid(steps)
    for i in range(steps):
        if not bool((z == prior.vocab_size).any()):
            break
        a_t, a_s = schedule.alpha(t[i]), schedule.alpha(t[i + 1])
        p = 1.0 if i == steps - 1 else float((a_s - a_t) / (1 - a_t))
        with torch.no_grad():
            logp = conditionals(counted, z)
        z = unmask_step(logp, z, p, prior.vocab_size, generator)
    return DiscreteSample(z, counted.nfe)


def first_hitting_sample(prior, n: int, tokens_per_step: int = 1, order: str = "random",
                         generator: torch.Generator | None = None, z: Tensor | None = None) -> DiscreteSample:
    """``n`` sequences unmasking ``tokens_per_step`` tokens per network call (see the module doc).

    :param order: ``"random"`` (uniform among the masked positions: exact for one token per
        call) or ``"confidence"`` (highest probability of the drawn token first).
    """
    check_prior(prior)
    if order not in ("random", "confidence"):
        raise ValueError(f"order: expected 'random' or 'confidence', got {order!r}")
    if not isinstance(tokens_per_step, int) or tokens_per_step < 1:
        raise ValueError(f"tokens_per_step: expected an int >= 1, got {tokens_per_step!r}")
    counted = CountingPrior(prior)
    V = prior.vocab_size
    z = all_masked(prior, n) if z is None else z.clone()
    for _ in range(math.ceil(prior.seq_len / tokens_per_step)):
        masked = z == V
        if not bool(masked.any()):
            break
        with torch.no_grad():
            logp = conditionals(counted, z)
        x0 = sample_categorical(logp, generator)
        if order == "random":
            score = gumbel(z.shape, generator, z.device)  # uniform random order of the masked positions
        else:
            score = logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
        score = torch.where(masked, score, torch.tensor(float("-inf"), dtype=score.dtype, device=z.device))
        k = min(tokens_per_step, prior.seq_len)
        top = score.topk(k, dim=1).indices
        pick = torch.zeros_like(masked).scatter_(1, top, True) & masked
        z = torch.where(pick, x0, z)
    return DiscreteSample(z, counted.nfe)
