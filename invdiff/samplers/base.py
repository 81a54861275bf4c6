"""The posterior-sampler base shared by every sampler (DPS, RED-Diff, SMC, DDS ...).

A sampler is built with a prior ``D(x, sigma)`` and its settings, and called with data:

.. code-block:: python

    sampler = DPS(prior, steps=200)
    out = sampler.sample(y, physics, n_samples=16, generator=g)   # PosteriorSamples
    out.samples       # (n_samples, B, *x_shape)
    out.log_weights   # (n_samples, B) for weighted samplers (SMC), else None
    out.nfe           # denoiser evaluations per sample
    x_hat = sampler(y, physics)                                   # point estimate

``physics`` is any deepinv ``Physics`` (linear or not); the measurement model is a likelihood
object (:mod:`invdiff.samplers.likelihood`) and the set-up of the batch a
:class:`~invdiff.samplers.problem.Problem`. This module holds the rest of what every sampler
needs: the base class, NaN handling that names the step, trajectory recording, NFE accounting
(:class:`CountingDenoiser`, which also passes a conditional prior its conditions) and the
validation of noise levels.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from invdiff.samplers.likelihood import Likelihood
from invdiff.samplers.problem import Problem, make_problem
from invdiff.samplers.results import PosteriorSamples

__all__ = [
    "PosteriorSamples",
    "Problem",
    "Sampler",
    "CountingDenoiser",
    "Recorder",
    "make_problem",
    "handle_nonfinite",
    "check_sigmas",
    "resolve_sigmas",
    "karras_levels",
]

OnNaN = Literal["raise", "clip"]


class CountingDenoiser:
    """Wrap a denoiser and count its (batched) evaluations: ``nfe`` is per sample.

    A float ``sigma`` is passed on as a ``(B,)`` tensor (as :func:`invdiff.diffusion.solvers.sample`
    does), which deepinv denoisers and invdiff priors both accept. ``cond`` (set by
    :meth:`Sampler.sample` for the rows of the working batch) is passed as keyword arguments,
    ``D(x, sigma, **cond)``; a call on another number of rows gets no conditions.

    >>> D = CountingDenoiser(lambda x, sigma: x)
    >>> _ = D(torch.zeros(4, 2), 1.0); _ = D(torch.zeros(4, 2), 0.5)
    >>> D.nfe
    2
    """

    def __init__(self, denoiser) -> None:
        if not callable(denoiser):
            raise TypeError(f"prior: expected a denoiser callable as D(x, sigma), got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.nfe = 0
        self.cond: dict = {}

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        self.nfe += 1
        if not isinstance(sigma, Tensor) or sigma.ndim == 0:  # a (B,) tensor suits every denoiser
            sigma = torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
        out = self.denoiser(x, sigma, **self.cond) if self.cond else self.denoiser(x, sigma)
        if out.shape != x.shape:
            raise ValueError(f"prior: D(x, sigma) must return x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
        return out


class Recorder:
    """Keep a copy of the iterate every ``every`` steps (and at the last step), on the CPU.

    ``every=None`` records nothing. :meth:`into` stores ``trajectory`` of shape
    ``(n_rec, n_samples, B, *x_shape)`` and ``trajectory_steps`` in a trace dict.
    """

    def __init__(self, every: int | None, problem: Problem) -> None:
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"record_every: expected None or an int >= 1, got {every!r}")
        self.every, self.problem = every, problem
        self.steps: list[int] = []
        self.states: list[Tensor] = []

    def __call__(self, step: int, x: Tensor, last: bool = False) -> None:
        if self.every is None or not (step % self.every == 0 or last):
            return
        if self.steps and self.steps[-1] == step:
            return
        self.steps.append(step)
        self.states.append(self.problem.fold(x.detach()).cpu().clone())

    def into(self, trace: dict) -> dict:
        if self.every is not None and self.states:
            trace["trajectory"] = torch.stack(self.states)
            trace["trajectory_steps"] = list(self.steps)
        return trace


def handle_nonfinite(x: Tensor, step: int, on_nan: OnNaN, what: str = "iterate",
                     fallback: Tensor | None = None, trace: dict | None = None) -> Tensor:
    """Check ``x`` for NaN/inf after step ``step``.

    ``on_nan="raise"`` raises ``FloatingPointError`` naming the step; ``"clip"`` replaces the
    non-finite entries by ``fallback`` (e.g. the iterate before the failing update, so that the
    update is skipped there) or by 0, and counts them in ``trace["nonfinite"]``.
    """
    # fast path: a sum is finite only if every term is (NaN and inf propagate), so one
    # reduction replaces an elementwise isfinite pass and its reduction; an overflowing sum
    # of finite values falls through to the exact test below
    if bool(torch.isfinite(x.sum())):
        return x
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return x
    n_bad = int((~finite).sum())
    if on_nan == "raise":
        rows = (~finite).flatten(1).any(1).nonzero().flatten().tolist()
        raise FloatingPointError(
            f"{what} became non-finite at step {step}: {n_bad} NaN/inf entries in rows {rows[:8]}"
            f"{'...' if len(rows) > 8 else ''}; lower the step size, or pass on_nan='clip' to skip "
            "the failing updates"
        )
    if trace is not None:
        trace.setdefault("nonfinite", []).append((step, n_bad))
    fill = torch.zeros_like(x) if fallback is None else torch.nan_to_num(fallback, nan=0.0, posinf=0.0, neginf=0.0)
    return torch.where(finite, x, fill)


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------
class Sampler:
    """Base class of posterior samplers over a diffusion prior ``D(x, sigma)``.

    Subclasses implement :meth:`_sample` (``problem, generator, recorder -> PosteriorSamples``)
    with the loop of their paper's algorithm box, using :attr:`denoiser` (a
    :class:`CountingDenoiser`), :meth:`check` for NaN handling and the :class:`Problem` for
    the likelihood.

    :param prior: a denoiser ``D(x, sigma) = E[x_0 | x_0 + sigma * eps = x]`` (an invdiff
        prior, a ``GaussianMixture``, or a deepinv denoiser).
    :param progress: show a tqdm bar over the steps.
    :param on_nan: ``"raise"`` (default) stops with a message naming the step; ``"clip"``
        skips the non-finite part of a failing update.
    """

    def __init__(self, prior, *, progress: bool = True, on_nan: OnNaN = "raise") -> None:
        if not callable(prior):
            raise TypeError(f"prior: expected a denoiser callable as D(x, sigma), got {type(prior).__name__}")
        if on_nan not in ("raise", "clip"):
            raise ValueError(f"on_nan: expected 'raise' or 'clip', got {on_nan!r}")
        self.prior = prior
        self.progress = bool(progress)
        self.on_nan = on_nan
        self.denoiser = CountingDenoiser(prior)

    # subclasses -------------------------------------------------------------------------
    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        raise NotImplementedError

    # public API -------------------------------------------------------------------------
    def sample(
        self,
        y: Tensor,
        physics,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        record_every: int | None = None,
        *,
        sigma_y: float | Tensor | None = None,
        likelihood: str | Likelihood = "auto",
        x_shape=None,
        cond: dict | None = None,
    ) -> PosteriorSamples:
        """Draw ``n_samples`` posterior samples per measurement in ``y`` (shape ``(B, ...)``).

        :param y: measurements ``(B, *y_shape)``, finite.
        :param physics: a deepinv ``Physics``; its ``noise_model`` gives ``sigma_y`` when Gaussian.
        :param n_samples: samples per measurement, drawn in one batch.
        :param generator: a ``torch.Generator`` for reproducible noise.
        :param record_every: keep the iterate every k steps in ``trace["trajectory"]``.
        :param sigma_y: Gaussian noise level, overriding the physics' noise model.
        :param likelihood: a :class:`~invdiff.samplers.likelihood.Likelihood` object, or
            ``"auto"`` (from ``physics.noise_model``), ``"gaussian"``, ``"poisson"``.
        :param x_shape: signal shape (no batch axis) when the physics cannot tell it.
        :param cond: conditions of a conditional prior, passed as ``D(x, sigma, **cond)``
            (tensors with a leading axis of size B follow the samples).
        :returns: :class:`PosteriorSamples` with ``samples`` of shape ``(n_samples, B, *x_shape)``.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        problem = make_problem(y, physics, n_samples, sigma_y=sigma_y, likelihood=likelihood,
                               x_shape=x_shape, prior=self.prior, cond=cond)
        record = Recorder(record_every, problem)
        self.denoiser.nfe = 0
        self.denoiser.cond = problem.cond
        try:
            out = self._sample(problem, generator, record)
        finally:
            self.denoiser.cond = {}
        record.into(out.trace)
        return out

    def __call__(self, y: Tensor, physics, **kwargs) -> Tensor:
        """Point estimate ``(B, *x_shape)``: the (weighted) mean of :meth:`sample`'s draws."""
        return self.sample(y, physics, **kwargs).mean()

    def check(self, x: Tensor, step: int, fallback: Tensor | None = None, trace: dict | None = None,
              what: str = "iterate") -> Tensor:
        """NaN/inf check of ``x`` after ``step`` following ``self.on_nan`` (see :func:`handle_nonfinite`)."""
        return handle_nonfinite(x, step, self.on_nan, what=what, fallback=fallback, trace=trace)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prior={type(self.prior).__name__})"


def check_sigmas(sigmas, allow_final_zero: bool = True) -> Tensor:
    """Validate a strictly descending 1-D tensor of noise levels (> 0, the last may be 0)."""
    from invdiff.diffusion.solvers import _check_sigmas

    if torch.is_tensor(sigmas) and not sigmas.is_floating_point():
        raise ValueError("sigmas: expected finite floating-point noise levels")
    values = _check_sigmas(sigmas)
    s = torch.as_tensor(sigmas)
    if not allow_final_zero and values[-1] == 0:
        raise ValueError(f"sigmas: expected noise levels > 0, got min {values[-1]}")
    if any(v == 0 for v in values[:-1]):  # pragma: no cover - excluded by strict descent
        raise ValueError("sigmas: expected noise levels > 0 (the last may be 0)")
    return s


def resolve_sigmas(steps, sigmas, allow_final_zero: bool = True) -> tuple[int, Tensor | None]:
    """``(steps, sigmas)`` of a sampler's constructor: explicit ``sigmas`` (validated, and then
    ``steps`` is their number of intervals, or of levels when no final zero is allowed) or an
    int ``steps >= 1``."""
    if sigmas is not None:
        s = check_sigmas(sigmas, allow_final_zero)
        return (len(s) - 1 if allow_final_zero else len(s)), s
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    return steps, None


def karras_levels(steps, sigmas, sigma_min: float, sigma_max: float) -> Tensor:
    """The noise levels of a sampler that anneals to 0: explicit ``sigmas`` (validated, ending at
    0), or ``steps`` Karras levels from ``sigma_max`` to ``sigma_min``, then 0."""
    if sigmas is None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        from invdiff.diffusion.schedules import karras_sigmas

        return karras_sigmas(steps, sigma_min, sigma_max)
    sigmas = check_sigmas(sigmas)
    if float(sigmas[-1]) != 0:
        raise ValueError(f"sigmas: expected the last noise level to be 0, got {float(sigmas[-1])}")
    return sigmas
