r"""Simulation-based calibration (SBC, Talts, Betancourt, Simpson, Vehtari & Gelman 2018) of posterior samplers.

Draw :math:`x^{(j)} \sim p(x)` from the prior, :math:`y^{(j)} \sim p(y \mid x^{(j)})` from the
operator, and :math:`L` posterior draws :math:`x^{(j)}_1, \dots, x^{(j)}_L` (weights :math:`W_l`)
from the sampler under test. If the sampler is exact, the truth is one more draw from the same
posterior, so its probability integral transform

.. math::
    u^{(j)} = \sum_l W_l\, \mathbf 1\big[x^{(j)}_l < x^{(j)}\big] + U \sum_l W_l\, \mathbf 1\big[x^{(j)}_l = x^{(j)}\big],
    \qquad U \sim \mathcal U(0, 1)

(the rank of the truth among the draws, divided by :math:`L + 1` with a uniform jitter, for equal
weights) is uniform on [0, 1] for every pixel and every summary statistic :math:`f(x)`, whatever
the prior: this checks any trained prior, not only exact ones. Reported:

- rank histograms (``bins`` bins) per pixel (pooled over pixels and trials) and per statistic;
- uniformity: Pearson's :math:`\chi^2` p-value of the pooled pixel histogram (pixels of one trial
  are correlated, so it is conservative only for the statistics: read it as a descriptive number)
  and the Kolmogorov-Smirnov p-value of each statistic's :math:`u` (trials are independent);
- per-pixel coverage of the central 90% intervals, :math:`\Pr(0.05 \le u \le 0.95)`, with its
  standard error across trials (the independent units).

An under-dispersed sampler piles :math:`u` at 0 and 1 (U-shaped histogram, coverage below 0.9);
an over-dispersed one in the middle (coverage above 0.9); a biased one on one side.

Example
-------
>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> prior = Gaussian(torch.zeros(3, dtype=torch.float64), 1.0)
>>> physics = Matrix(torch.eye(3, dtype=torch.float64)[:2], sigma=0.5)
>>> res = sbc(prior, physics, ExactGaussianPosterior(prior), n_trials=200, n_draws=99,
...           generator=torch.Generator().manual_seed(0))
>>> abs(res.coverage - 0.9) < 4 * res.coverage_se
True
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from invdiff.samplers.base import Sampler
from invdiff.samplers.results import PosteriorSamples
from invdiff.utils.random import rand, randn

__all__ = ["sbc", "SBCResult", "pit_values", "draw_prior", "simulate", "ExactGaussianPosterior", "DEFAULT_STATISTICS"]


def _mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


def _energy(x: Tensor) -> Tensor:
    return x.flatten(1).pow(2).mean(1)


def _first(x: Tensor) -> Tensor:
    return x.flatten(1)[:, 0]


#: summary statistics ``f(x) -> (n,)`` checked by default: the signal's mean, its mean square
#: (energy) and its first coordinate
DEFAULT_STATISTICS: dict[str, Callable[[Tensor], Tensor]] = {"mean": _mean, "energy": _energy, "first": _first}


def pit_values(samples: Tensor, truth: Tensor, weights: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """:math:`u` of the module docstring per measurement and coordinate.

    :param samples: ``(L, B, *shape)`` posterior draws. :param truth: ``(B, *shape)``.
    :param weights: ``(L, B)`` normalised weights or ``None`` (equal).
    :returns: ``(B, *shape)`` values in [0, 1].
    """
    if samples.shape[1:] != truth.shape:
        raise ValueError(f"samples: expected shape (L, {', '.join(map(str, truth.shape))}), got {tuple(samples.shape)}")
    L = samples.shape[0]
    w = torch.full(samples.shape[:2], 1.0 / L, dtype=samples.dtype, device=samples.device) if weights is None \
        else weights.to(samples.dtype)
    w = w.reshape(*w.shape, *([1] * (samples.ndim - 2)))
    below = (w * (samples < truth).to(samples.dtype)).sum(0)
    ties = (w * (samples == truth).to(samples.dtype)).sum(0)
    u = rand(truth.shape, generator, truth.device, samples.dtype)
    if weights is None:  # the rank r in {0..L} of the truth, jittered: (r + U) / (L + 1), exactly uniform
        r = below * L + u * (ties * L + 1)
        return (r / (L + 1)).clamp(0, 1)
    return (below + u * ties).clamp(0, 1)


def draw_prior(prior, n: int, x_shape: tuple[int, ...] | None = None, generator: torch.Generator | None = None,
               steps: int = 32, sigma_max: float = 80.0, dtype=torch.float32, device="cpu") -> Tensor:
    """``n`` draws from the prior: ``prior.sample`` when it has one (exact priors), else the
    unconditional probability-flow ODE (Heun on ``steps`` Karras levels over [0.002, sigma_max])."""
    if hasattr(prior, "sample"):
        return prior.sample(n, generator=generator)
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.diffusion.solvers import sample

    shape = x_shape if x_shape is not None else getattr(prior, "x_shape", None)
    if shape is None:
        raise ValueError("x_shape: the prior has no sample() and no x_shape; pass x_shape=(C, H, W)")
    x = sigma_max * randn((n, *shape), generator, device, dtype)
    return sample(prior, x, karras_sigmas(steps, 0.002, sigma_max, dtype=dtype), method="heun").x


def simulate(physics, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """:math:`y \\sim p(y \\mid x)`: Gaussian noise of the likelihood's variance drawn from ``generator``
    when the measurement model is Gaussian, else ``physics(x)`` (deepinv's noise model)."""
    from invdiff.samplers.likelihood import GaussianLikelihood, likelihood_from

    lik = likelihood_from(physics)
    with torch.no_grad():
        clean = physics.A(x)
    if lik is None:
        return clean
    if type(lik) is GaussianLikelihood and torch.as_tensor(lik.sigma).numel() == 1:
        sigma = float(torch.as_tensor(lik.sigma))
        return clean + sigma * randn(clean.shape, generator, clean.device, clean.dtype)
    with torch.no_grad():
        return physics(x)


class ExactGaussianPosterior(Sampler):
    """Exact posterior draws of a :class:`~invdiff.diffusion.gmm.GaussianMixture` prior under
    ``y = A x + sigma_y n`` with ``physics.matrix = A`` (:meth:`GaussianMixture.posterior`): the
    calibrated reference of SBC. ``shrink < 1`` pulls the draws towards their mean by that factor
    (a deliberately under-dispersed sampler, for tests)."""

    def __init__(self, prior, shrink: float = 1.0, progress: bool = False) -> None:
        super().__init__(prior, progress=progress)
        self.shrink = float(shrink)

    def _sample(self, problem, generator, record) -> PosteriorSamples:
        A = problem.physics.matrix
        sy = problem.sigma_y.flatten()
        out = []
        for b in range(problem.batch):
            post = self.prior.posterior(A, problem.y[b], float(sy[b]))
            s = post.sample(problem.n_samples, generator=generator)
            out.append(s.mean(0) + self.shrink * (s - s.mean(0)))
        return PosteriorSamples(torch.stack(out, 1).reshape(problem.n_samples, problem.batch, *problem.x_shape))


@dataclass
class SBCResult:
    """Ranks and summaries of one SBC run (module docstring)."""

    pit: Tensor  # (n_trials, *x_shape)
    stat_pit: dict[str, Tensor]  # name -> (n_trials,)
    n_draws: int
    bins: int = 10
    extra: dict = field(default_factory=dict)

    @property
    def inside(self) -> Tensor:
        """Per trial, the fraction of pixels whose truth lies in the central 90% interval ``(n_trials,)``."""
        return ((self.pit >= 0.05) & (self.pit <= 0.95)).flatten(1).double().mean(1)

    @property
    def coverage(self) -> float:
        return float(self.inside.mean())

    @property
    def coverage_se(self) -> float:
        n = self.inside.numel()
        return float(self.inside.std() / math.sqrt(n)) if n > 1 else float("nan")

    def histogram(self, u: Tensor) -> Tensor:
        """Counts of ``u`` in ``bins`` equal bins of [0, 1]."""
        idx = (u.flatten().double() * self.bins).floor().clamp(0, self.bins - 1).long()
        return torch.bincount(idx, minlength=self.bins)

    def chi2_p(self, u: Tensor) -> float:
        """Pearson's chi-square p-value of uniformity of ``u`` over the bins."""
        from scipy.stats import chi2

        h = self.histogram(u).double()
        e = h.sum() / self.bins
        return float(chi2.sf(float(((h - e) ** 2 / e).sum()), self.bins - 1))

    def ks_p(self, u: Tensor) -> float:
        """Kolmogorov-Smirnov p-value of uniformity of ``u``."""
        from scipy.stats import kstest

        return float(kstest(u.flatten().double().cpu().numpy(), "uniform").pvalue)

    def summary(self) -> dict:
        """One table row: coverage (and its standard error), pixel chi^2 p, per-statistic KS p and the
        lowest of them."""
        row = {"trials": int(self.pit.shape[0]), "draws": self.n_draws, "coverage90": round(self.coverage, 3),
               "coverage90_se": round(self.coverage_se, 3), "pixel_chi2_p": self.chi2_p(self.pit)}
        for k, u in self.stat_pit.items():
            row[f"ks_p_{k}"] = self.ks_p(u)
        row["min_stat_ks_p"] = min((row[f"ks_p_{k}"] for k in self.stat_pit), default=float("nan"))
        return {**row, **self.extra}

    def plot(self, path, title: str = "") -> None:
        """Rank histograms (pixels pooled, then each statistic) with the 99% band of a uniform histogram."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from invdiff.utils.io import atomic_path

        panels = [("pixels", self.pit)] + list(self.stat_pit.items())
        fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.3), squeeze=False)
        for ax, (name, u) in zip(axes[0], panels):
            h = self.histogram(u).double()
            n = float(h.sum())
            p = 1.0 / self.bins
            band = 2.58 * math.sqrt(n * p * (1 - p))
            ax.bar(range(self.bins), h.numpy(), width=1.0, color="0.6", edgecolor="k")
            ax.axhspan(n * p - band, n * p + band, color="tab:blue", alpha=0.2)
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)


def sbc(prior, physics, sampler: Sampler, n_trials: int = 100, n_draws: int = 32,
        generator: torch.Generator | None = None, statistics: dict | None = None, chunk: int | None = None,
        truths: Tensor | None = None, x_shape=None, **sample_kwargs) -> SBCResult:
    """Run SBC (module docstring): ``n_trials`` prior draws, one measurement each, ``n_draws``
    posterior draws per measurement by ``sampler`` (its settings as built).

    :param prior: what the truths are drawn from (:func:`draw_prior`); ignored when ``truths`` is given
        (e.g. prior draws made once and reused for every sampler).
    :param chunk: measurements per ``sampler.sample`` call (default all ``n_trials`` at once).
    :param statistics: ``{name: f(x) -> (n,)}``, default :data:`DEFAULT_STATISTICS`.
    :param sample_kwargs: passed to ``sampler.sample`` (``sigma_y=``, ``likelihood=`` ...).
    """
    if not isinstance(n_trials, int) or n_trials < 2:
        raise ValueError(f"n_trials: expected an int >= 2, got {n_trials!r}")
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws: expected an int >= 1, got {n_draws!r}")
    stats = DEFAULT_STATISTICS if statistics is None else statistics
    x = truths if truths is not None else draw_prior(prior, n_trials, x_shape, generator)
    if x.shape[0] != n_trials:
        raise ValueError(f"truths: expected {n_trials} signals, got {x.shape[0]}")
    y = simulate(physics, x, generator)
    chunk = chunk or n_trials
    pits, stat_pits = [], {k: [] for k in stats}
    for start in range(0, n_trials, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        out = sampler.sample(ys, physics, n_samples=n_draws, generator=generator, **sample_kwargs)
        w = None if out.log_weights is None else out.weights()
        pits.append(pit_values(out.samples, xs.to(out.samples.dtype), w, generator))
        L, B = out.samples.shape[:2]
        flat = out.samples.reshape(L * B, *out.samples.shape[2:])
        for k, f in stats.items():
            s = f(flat).reshape(L, B)
            stat_pits[k].append(pit_values(s, f(xs.to(flat.dtype)), w, generator))
    return SBCResult(torch.cat(pits).cpu(), {k: torch.cat(v).cpu() for k, v in stat_pits.items()}, n_draws)
