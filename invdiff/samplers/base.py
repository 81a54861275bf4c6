"""The posterior-sampler API shared by every sampler (DPS, RED-Diff, SMC ...).

A sampler is built with a prior ``D(x, sigma)`` and its settings, and called with data:

.. code-block:: python

    sampler = DPS(prior, steps=200)
    out = sampler.sample(y, physics, n_samples=16, generator=g)   # PosteriorSamples
    out.samples       # (n_samples, B, *x_shape)
    out.log_weights   # (n_samples, B) for weighted samplers (SMC), else None
    out.nfe           # denoiser evaluations per sample
    x_hat = sampler(y, physics)                                   # point estimate

The measurement model is

.. math::
    y = \\mathcal{A}(x) + n, \\qquad n \\sim \\mathcal{N}(0, \\sigma_y^2 I)
    \\quad\\text{or}\\quad y = g\\,\\mathrm{Poisson}(\\mathcal{A}(x) / g),

with ``physics`` any deepinv ``Physics`` (linear or not). This module holds what every
sampler needs and nothing sampler-specific: the measurement set-up (:class:`Problem`: noise
level from ``physics.noise_model``, signal shape, prior/operator shape check, the batch of
``n_samples`` copies), the whitened residual and negative log-likelihood, NaN handling that
names the step, trajectory recording, and NFE accounting (:class:`CountingDenoiser`).

Samples for ``n_samples > 1`` are drawn in one batch: the measurement batch ``(B, ...)`` is
repeated ``n_samples`` times along the batch axis (sample-major, so that row ``k * B + b`` is
sample ``k`` of measurement ``b``) and every step costs one batched denoiser call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from invdiff.utils.checks import check_finite, check_floating, check_positive

__all__ = [
    "PosteriorSamples",
    "Problem",
    "Sampler",
    "CountingDenoiser",
    "Recorder",
    "make_problem",
    "handle_nonfinite",
    "check_sigmas",
]

OnNaN = Literal["raise", "clip"]


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------
@dataclass
class PosteriorSamples:
    """Samples of a posterior sampler, with optional importance log-weights.

    ``samples`` has shape ``(n_samples, B, *x_shape)``; ``log_weights`` is ``(n_samples, B)``
    (unnormalised, log space) for weighted samplers, ``None`` for equally weighted ones.
    ``nfe`` counts denoiser evaluations per sample; ``trace`` holds per-step diagnostics
    (e.g. ``"ess"``, ``"residual_norm"``, ``"trajectory"`` of shape ``(n_rec, n_samples, B,
    *x_shape)`` with ``"trajectory_steps"``).

    The weighted moments are

    .. math::
        \\bar w_k = \\frac{e^{\\ell_k}}{\\sum_j e^{\\ell_j}}, \\quad
        \\hat\\mu = \\sum_k \\bar w_k x_k, \\quad
        \\hat\\sigma^2 = \\sum_k \\bar w_k (x_k - \\hat\\mu)^2 .

    >>> out = PosteriorSamples(torch.tensor([[[0.0]], [[2.0]]]), None, nfe=0)
    >>> out.mean(), out.std()
    (tensor([[1.]]), tensor([[1.]]))
    """

    samples: Tensor
    log_weights: Tensor | None = None
    nfe: int = 0
    trace: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Tensor) or self.samples.ndim < 2:
            raise ValueError(
                "samples: expected a tensor of shape (n_samples, B, *x_shape), got "
                f"{getattr(self.samples, 'shape', type(self.samples).__name__)}"
            )
        if self.log_weights is not None and tuple(self.log_weights.shape) != tuple(self.samples.shape[:2]):
            raise ValueError(
                f"log_weights: expected shape {tuple(self.samples.shape[:2])} (n_samples, B), "
                f"got {tuple(self.log_weights.shape)}"
            )

    @property
    def n_samples(self) -> int:
        return self.samples.shape[0]

    def weights(self) -> Tensor:
        """Normalised weights ``(n_samples, B)`` (uniform when ``log_weights`` is None)."""
        n, b = self.samples.shape[:2]
        if self.log_weights is None:
            return torch.full((n, b), 1.0 / n, dtype=self.samples.dtype, device=self.samples.device)
        return torch.softmax(self.log_weights.to(self.samples.dtype), dim=0)

    def ess(self) -> Tensor:
        """Effective sample size ``1 / sum_k w_k^2`` per measurement, shape ``(B,)``."""
        return 1.0 / (self.weights() ** 2).sum(0)

    def _w(self) -> Tensor:
        return self.weights().reshape(*self.samples.shape[:2], *([1] * (self.samples.ndim - 2)))

    def mean(self) -> Tensor:
        """Weighted posterior mean, shape ``(B, *x_shape)``."""
        return (self._w() * self.samples).sum(0)

    def std(self) -> Tensor:
        """Weighted posterior standard deviation per coordinate, shape ``(B, *x_shape)``.

        The plug-in (biased) estimator; with equal weights it equals ``samples.std(0,
        unbiased=False)``.
        """
        m = self.mean()
        var = (self._w() * (self.samples - m) ** 2).sum(0)
        return var.clamp_min(0).sqrt()


# --------------------------------------------------------------------------------------------
# Measurement set-up
# --------------------------------------------------------------------------------------------
def _noise_kind(physics) -> tuple[str, object]:
    """``("gaussian", sigma)``, ``("poisson", gain)``, ``("none", None)`` or ``("other", name)``."""
    nm = getattr(physics, "noise_model", None)
    if nm is None:
        return "none", None
    name = type(nm).__name__
    if name == "GaussianNoise":
        return "gaussian", nm.sigma
    if name == "PoissonNoise":
        return "poisson", nm.gain
    if name == "ZeroNoise":
        return "none", None
    return "other", name


@dataclass
class Problem:
    """A measurement batch set up for sampling ``n_samples`` posterior draws in one batch.

    ``y`` is the measurement repeated to ``(n_samples * B, *y_shape)`` (sample-major). The
    likelihood is Gaussian with standard deviation ``sigma_y`` (``(n_samples * B, 1, ..., 1)``
    on the measurement side) or Poisson with gain ``gain``, approximated as in DPS (Chung et
    al. 2023, eq. 16) by a Gaussian of variance :math:`g\\,y_j`.
    """

    y: Tensor
    physics: object
    x_shape: tuple[int, ...]
    batch: int
    n_samples: int
    likelihood: str
    sigma_y: Tensor | None
    gain: Tensor | None

    @property
    def n(self) -> int:
        """Rows of the working batch: ``n_samples * B``."""
        return self.n_samples * self.batch

    @property
    def dtype(self) -> torch.dtype:
        return self.y.dtype

    @property
    def device(self) -> torch.device:
        return self.y.device

    def fold(self, x: Tensor) -> Tensor:
        """``(n_samples * B, ...) -> (n_samples, B, ...)``."""
        return x.reshape(self.n_samples, self.batch, *x.shape[1:])

    def unfold(self, x: Tensor) -> Tensor:
        """``(n_samples, B, ...) -> (n_samples * B, ...)``."""
        return x.reshape(self.n, *x.shape[2:])

    def zeros(self) -> Tensor:
        """A zero signal batch ``(n_samples * B, *x_shape)`` with y's dtype and device."""
        return torch.zeros(self.n, *self.x_shape, dtype=self.dtype, device=self.device)

    def whitened_residual(self, x: Tensor) -> Tensor:
        """:math:`r = (y - \\mathcal{A}(x)) / \\sqrt{\\mathrm{Var}\\,y}`, differentiable in ``x``.

        Gaussian: :math:`\\mathrm{Var}\\,y = \\sigma_y^2`. Poisson: :math:`g \\max(y, g)` (the
        DPS weighting :math:`\\Lambda_{jj} = 1 / (2 y_j)` for unit gain, floored at one count).
        """
        r = self.y - self.physics.A(x)
        if self.likelihood == "gaussian":
            return r / self.sigma_y
        return r / (self.gain * torch.maximum(self.y, self.gain)).sqrt()

    def nll(self, x: Tensor) -> Tensor:
        """Negative log-likelihood up to a constant, per row: :math:`\\|r\\|^2 / 2`, shape ``(n,)``."""
        r = self.whitened_residual(x)
        return 0.5 * r.pow(2).flatten(1).sum(1)

    def baseline(self) -> Tensor:
        """A baseline inverse of ``y``: the operator's classical reconstruction
        (``physics.baseline``, e.g. FBP for invdiff's CT), else ``A_dagger`` if linear, else zeros."""
        try:
            return self.physics.baseline(self.y).reshape(self.n, *self.x_shape)
        except (AttributeError, NotImplementedError):
            pass
        if hasattr(self.physics, "A_dagger") and hasattr(self.physics, "A_adjoint"):
            return self.physics.A_dagger(self.y).reshape(self.n, *self.x_shape)
        return self.zeros()


def _signal_shape(y: Tensor, physics, x_shape) -> tuple[int, ...]:
    if x_shape is not None:
        return tuple(int(s) for s in x_shape)
    xs = getattr(physics, "x_shape", None)
    if xs is not None:
        return tuple(int(s) for s in xs)
    if hasattr(physics, "A_adjoint"):
        with torch.no_grad():
            return tuple(physics.A_adjoint(y).shape[1:])
    raise ValueError(
        "cannot tell the signal shape: the physics has no x_shape attribute and no A_adjoint "
        f"({type(physics).__name__}); pass x_shape=(C, H, W) to sample()"
    )


def _per_row(value: Tensor, batch: int, n_samples: int, y: Tensor, name: str) -> Tensor:
    """A scalar or per-measurement ``(B,)`` noise parameter as ``(n_samples*B, 1, ..., 1)``."""
    v = torch.as_tensor(value, dtype=y.dtype, device=y.device).flatten()
    if v.numel() == 1:
        v = v.expand(batch)
    elif v.numel() != batch:
        raise ValueError(f"{name}: expected a float or {batch} values (one per measurement), got {v.numel()}")
    check_positive(name, v)
    return v.repeat(n_samples).reshape(-1, *([1] * (y.ndim - 1)))


def make_problem(
    y: Tensor,
    physics,
    n_samples: int = 1,
    *,
    sigma_y: float | Tensor | None = None,
    likelihood: str = "auto",
    x_shape=None,
    prior=None,
) -> Problem:
    """Validate ``y`` and ``physics`` and set up the batch of ``n_samples`` copies.

    ``likelihood="auto"`` takes Poisson when ``physics.noise_model`` is deepinv's
    ``PoissonNoise``, else Gaussian; the Gaussian ``sigma_y`` is the explicit argument or
    ``physics.noise_model.sigma`` (deepinv ``GaussianNoise``). Raises ``ValueError`` for
    non-finite ``y``, an unknown noise level, or a prior whose ``x_shape`` differs from the
    operator's signal shape.

    >>> import deepinv as dinv
    >>> physics = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(0.1))
    >>> p = make_problem(torch.zeros(2, 1, 4, 4), physics, n_samples=3)
    >>> p.y.shape, p.x_shape, float(p.sigma_y.flatten()[0])
    (torch.Size([6, 1, 4, 4]), (1, 4, 4), 0.10000000149011612)
    """
    check_floating("y", y)
    if y.ndim < 2:
        raise ValueError(f"y: expected a batch of shape (B, *y_shape), got shape {tuple(y.shape)}")
    check_finite("y", y)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    if likelihood not in ("auto", "gaussian", "poisson"):
        raise ValueError(f"likelihood: expected 'auto', 'gaussian' or 'poisson', got {likelihood!r}")
    if not hasattr(physics, "A"):
        raise TypeError(f"physics: expected a deepinv Physics with an A method, got {type(physics).__name__}")

    batch = y.shape[0]
    kind, param = _noise_kind(physics)
    if likelihood == "auto":
        likelihood = "poisson" if (kind == "poisson" and sigma_y is None) else "gaussian"
    sig = gain = None
    if likelihood == "gaussian":
        if sigma_y is None:
            if kind != "gaussian":
                got = {"none": "no noise model", "poisson": "PoissonNoise"}.get(kind, str(param))
                raise ValueError(
                    "sigma_y: the Gaussian likelihood needs the noise level; physics.noise_model is "
                    f"{got}, not deepinv GaussianNoise, so pass sigma_y= explicitly"
                )
            sigma_y = param
        sig = _per_row(sigma_y, batch, n_samples, y, "sigma_y")
    else:
        if kind != "poisson":
            raise ValueError(
                "likelihood='poisson' needs physics.noise_model to be deepinv PoissonNoise (for its gain), "
                f"got {type(getattr(physics, 'noise_model', None)).__name__}"
            )
        gain = _per_row(param, batch, n_samples, y, "gain")

    shape = _signal_shape(y, physics, x_shape)
    prior_shape = getattr(prior, "x_shape", None)
    if prior_shape is not None and tuple(prior_shape) != shape:
        raise ValueError(
            f"prior/operator shape mismatch: the prior models signals of shape {tuple(prior_shape)}, "
            f"the operator's signals have shape {shape}"
        )
    y_rep = y.repeat(n_samples, *([1] * (y.ndim - 1)))
    if n_samples > 1 and batch > 1:  # per-measurement operator parameters cannot follow the repeat
        try:
            with torch.no_grad():
                probe = physics.A(torch.zeros(y_rep.shape[0], *shape, dtype=y.dtype, device=y.device))
            ok = tuple(probe.shape) == tuple(y_rep.shape)
        except (RuntimeError, ValueError) as err:
            ok, probe = False, err
        if not ok:
            raise ValueError(
                f"the operator does not broadcast over the {n_samples} x {batch} batch of samples "
                f"(got {getattr(probe, 'shape', probe)}); it likely holds per-measurement parameters: "
                "sample one measurement at a time (B = 1) or use n_samples=1"
            )
    return Problem(y_rep, physics, shape, batch, n_samples, likelihood, sig, gain)


# --------------------------------------------------------------------------------------------
# Loop helpers
# --------------------------------------------------------------------------------------------
class CountingDenoiser:
    """Wrap a denoiser and count its (batched) evaluations: ``nfe`` is per sample.

    A float ``sigma`` is passed on as a ``(B,)`` tensor (as :func:`invdiff.diffusion.solvers.sample`
    does), which deepinv denoisers and invdiff priors both accept.

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

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        self.nfe += 1
        if not isinstance(sigma, Tensor) or sigma.ndim == 0:  # a (B,) tensor suits every denoiser
            sigma = torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
        out = self.denoiser(x, sigma)
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
        likelihood: str = "auto",
        x_shape=None,
    ) -> PosteriorSamples:
        """Draw ``n_samples`` posterior samples per measurement in ``y`` (shape ``(B, ...)``).

        :param y: measurements ``(B, *y_shape)``, finite.
        :param physics: a deepinv ``Physics``; its ``noise_model`` gives ``sigma_y`` when Gaussian.
        :param n_samples: samples per measurement, drawn in one batch.
        :param generator: a ``torch.Generator`` for reproducible noise.
        :param record_every: keep the iterate every k steps in ``trace["trajectory"]``.
        :param sigma_y: Gaussian noise level, overriding the physics' noise model.
        :param likelihood: ``"auto"``, ``"gaussian"`` or ``"poisson"``.
        :param x_shape: signal shape (no batch axis) when the physics cannot tell it.
        :returns: :class:`PosteriorSamples` with ``samples`` of shape ``(n_samples, B, *x_shape)``.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
        problem = make_problem(y, physics, n_samples, sigma_y=sigma_y, likelihood=likelihood,
                               x_shape=x_shape, prior=self.prior)
        record = Recorder(record_every, problem)
        self.denoiser.nfe = 0
        out = self._sample(problem, generator, record)
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
    s = torch.as_tensor(sigmas)
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas: expected a 1-D tensor of at least 2 noise levels, got shape {tuple(s.shape)}")
    if not s.is_floating_point() or not bool(torch.isfinite(s).all()):
        raise ValueError("sigmas: expected finite floating-point noise levels")
    low = s if not allow_final_zero else s[:-1]
    if bool((low <= 0).any()) or bool(s[-1] < 0):
        last = "(the last may be 0)" if allow_final_zero else ""
        raise ValueError(f"sigmas: expected noise levels > 0 {last}, got min {float(s.min())}")
    if bool((s[1:] >= s[:-1]).any()):
        raise ValueError("sigmas: expected a strictly descending sequence")
    return s
