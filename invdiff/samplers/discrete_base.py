r"""The posterior-sampler API for masked-diffusion (discrete) priors.

Discrete samplers follow the contract of :class:`invdiff.samplers.base.Sampler`:

.. code-block:: python

    out = sampler.sample(y, physics, n_samples=16, generator=g)   # PosteriorSamples
    out.samples        # (n_samples, B, *x_shape): decoded signals (codebook values)
    out.trace["tokens"]  # (n_samples, B, L): the token sequences
    out.log_weights    # (n_samples, B) for weighted samplers (SMC), else None
    out.nfe            # network (logits) evaluations per sample

The prior is a masked-diffusion prior (``vocab_size``, ``seq_len``, ``logits(z)``; see
:mod:`invdiff.diffusion.discrete.denoiser`) with a ``codebook`` that decodes tokens to
signals, so any deepinv ``Physics`` acting on signals applies. The continuous base class does
not fit (its prior is a denoiser ``D(x, sigma)`` and its iterate a real tensor); this thin base
reuses its measurement set-up (:func:`~invdiff.samplers.base.make_problem`: noise level,
shapes, the batch of ``n_samples`` copies, sample-major) and its result type.

The likelihood of a token sequence is that of its decoded signal,
:math:`p(y \mid x) \propto \exp(-\tfrac12 \| r(\mathrm{dec}(x)) \|^2)` (``problem.nll``).
:func:`expected_signal` decodes the posterior-mean code vectors of token probabilities
(the discrete analogue of Tweedie's :math:`\hat x_0`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.diffusion.discrete.denoiser import CountingPrior, check_prior
from invdiff.samplers.problem import Problem, make_problem
from invdiff.samplers.results import PosteriorSamples

__all__ = ["DiscreteSampler", "expected_signal", "systematic_resample"]


def expected_signal(codebook, logp: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    r"""Signal of the expected code vectors :math:`\sum_v p_{lv} e_v` of log-probabilities ``(B, L, V)``."""
    p = logp.exp()
    if dtype is not None:
        p = p.to(dtype)
    return codebook.signal(codebook.embed(p))


def systematic_resample(log_w: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Systematic resampling of each column of ``log_w`` ``(N, B)``: ancestor indices ``(N, B)``."""
    from invdiff.utils.random import rand

    N, B = log_w.shape
    w = torch.softmax(log_w.double(), dim=0)
    cdf = w.cumsum(0)
    cdf[-1] = 1.0
    u = (rand((1, B), generator=generator, device=log_w.device, dtype=torch.float64)
         + torch.arange(N, device=log_w.device, dtype=torch.float64).unsqueeze(1)) / N
    return torch.searchsorted(cdf.T.contiguous(), u.T.contiguous()).T.clamp(max=N - 1)


class DiscreteSampler:
    """Base class of posterior samplers over a masked-diffusion prior with a codebook.

    Subclasses implement :meth:`_sample` ``(problem, prior, generator) -> (tokens (n, L),
    log_weights (n,) or None, trace)`` where ``prior`` counts its network calls and rows are
    sample-major as in :class:`~invdiff.samplers.base.Problem`.
    """

    def __init__(self, prior, *, progress: bool = False) -> None:
        check_prior(prior)
        if getattr(prior, "codebook", None) is None:
            raise TypeError(f"prior: expected a masked-diffusion prior with a codebook (to decode tokens to signals); "
                            f"{type(prior).__name__} has none")
        self.prior = prior
        self.codebook = prior.codebook
        self.progress = bool(progress)

    def _sample(self, problem: Problem, prior: CountingPrior, generator: torch.Generator | None):
        raise NotImplementedError

    def decode(self, tokens: Tensor, problem: Problem) -> Tensor:
        """Signals ``(n, *x_shape)`` of tokens ``(n, L)`` in the measurement's dtype and device."""
        return self.codebook.decode(tokens, dtype=problem.dtype).to(problem.device)

    def sample(self, y: Tensor, physics, n_samples: int = 1, generator: torch.Generator | None = None, *,
               sigma_y: float | Tensor | None = None, likelihood: str = "auto") -> PosteriorSamples:
        """Draw ``n_samples`` posterior samples per measurement of ``y`` ``(B, *y_shape)``."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        x_shape = None if getattr(physics, "x_shape", None) is not None else self.codebook.x_shape
        problem = make_problem(y, physics, n_samples, sigma_y=sigma_y, likelihood=likelihood,
                               x_shape=x_shape, prior=self.prior)
        counted = CountingPrior(self.prior)
        tokens, log_w, trace = self._sample(problem, counted, generator)
        x = self.decode(tokens, problem)
        trace = dict(trace)
        trace["tokens"] = problem.fold(tokens)
        lw = None if log_w is None else problem.fold(log_w)
        return PosteriorSamples(problem.fold(x), lw, nfe=counted.nfe, trace=trace)

    def __call__(self, y: Tensor, physics, **kwargs) -> Tensor:
        """Point estimate ``(B, *x_shape)``: the (weighted) mean of :meth:`sample`'s draws."""
        return self.sample(y, physics, **kwargs).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prior={type(self.prior).__name__})"
