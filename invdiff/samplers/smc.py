r"""Sequential Monte Carlo posterior samplers over a diffusion prior: the ensemble sampler of
Chen, Ren, Min, Ying & Izzo (2025) and twisted diffusion sampling (TDS, Wu et al. 2023).

Both carry ``N`` weighted particles per measurement from ``sigma_max`` down to 0. Particles are
batched (``N x B`` rows, one denoiser call per step), log-weights stay in log space, and the
particles are resampled when the effective sample size ``ESS = 1 / sum_k w_k^2`` falls below
``ess_threshold * N`` (systematic or multinomial resampling, :func:`resample`). ``trace["ess"]``
holds the ESS of every step (before resampling), ``trace["resampled"]`` the steps that resampled.

SMC ensemble (Chen et al. 2025, "Solving Inverse Problems via Diffusion-Based Priors: An
Approximation-Free Ensemble Sampling Approach"). With :math:`\mu_y(x)` the negative
log-likelihood evaluated at the *noisy* particle, the targets are

.. math::
    q_\sigma(x) \propto p_\sigma(x)\, e^{-\mu_y(x)}, \qquad
    q_{\sigma_{max}} \approx \mathcal N(0, \sigma_{max}^2 I)\, e^{-\mu_y}, \qquad
    q_0 = p(x \mid y).

Between levels the particles follow the prior's reverse dynamics (drift :math:`H`, noise
:math:`v`) corrected by the likelihood, and their weights follow the reweighting term of the
modified PDE:

.. math::
    dx = (H - v^2 \nabla\mu_y)\,dt + v\, dW, \qquad
    d\log w = \Big[\tfrac{v^2}{2}\big(\|\nabla\mu_y\|^2 - \Delta\mu_y\big)
              - H \cdot \nabla\mu_y\Big] dt .

Here the prior dynamics are the DDIM/ancestral kernel
:math:`p(x' \mid x) = \mathcal N(m(x), \tau I)` of :func:`invdiff.diffusion.solvers.ancestral_sigmas`
(``eta = 1``: DDPM, :math:`v = g`; smaller ``eta`` moves towards the ODE, :math:`v \to 0`).

*The stiff 1/sigma_y^2 term is annealed and split exactly* (``split="exact"``, the default for
a linear operator with Gaussian noise). Annealed: the likelihood of the noisy particle is taken
with the noise a flat prior would add, :math:`\mu_\sigma(x) = -\log \mathcal N(y; A x, \sigma_y^2 I
+ c^2 \sigma^2 A A^\top)` (``inflation = c``, default 1; ``c = 0`` is the paper's :math:`\mu_y` at
every level); in VE variables the paper's targets make the weights carry the likelihood through
:math:`\sigma_{max}^2/\sigma_y^2` units of time and the ensemble collapses onto few ancestors.
Split exactly: each step samples the product of the prior kernel and this likelihood, which is
Gaussian, and weights by its normaliser (``c = 0`` shown):

.. math::
    x' \sim \mathcal N(m, \tau I)\, e^{-\mu_y(x')}, \qquad
    \log w \mathrel{+}= \log \mathcal N\big(y;\, A m,\, \sigma_y^2 I + \tau A A^\top\big) + \mu_y(x).

This is a fully adapted (auxiliary) particle filter for the path measure whose time marginals
are :math:`q_\sigma`: no approximation beyond the prior's discretisation, stable for any
:math:`\sigma_y` and step size, and to first order in :math:`\tau` it is exactly the drift
:math:`-v^2 \nabla\mu_y` and the weight rate above (the Laplacian of a linear-Gaussian
:math:`\mu_y` is the constant :math:`\|A\|_F^2/\sigma_y^2`, which cancels on normalisation).
Dense operators (``physics.matrix``) use the SVD; other ``LinearPhysics`` use ``physics.prox_l2``
(the mean, and perturb-and-MAP for the noise). ``split="explicit"`` is the paper's Euler scheme
above for any operator, with a Hutchinson estimate of :math:`\Delta\mu_y` for nonlinear
operators or Poisson noise, and a scalar annealing of the likelihood (see :class:`SMCEnsemble`).

Twisted SMC (:class:`TwistedSMC`, Wu et al. 2023, TDS): particles move by the guided kernel
:math:`\mathcal N(m + \tau \nabla \log \tilde p_\sigma, \tau I)` with the twisting function
:math:`\tilde p_\sigma(y \mid x) = \mathcal N(y; \mathcal A(D(x, \sigma)), \sigma_y^2 + \kappa_\sigma)`
and weights :math:`p(x' \mid x)\, \tilde p_{\sigma'}(y \mid x') / (q(x' \mid x)\, \tilde p_\sigma(y \mid x))`;
one denoiser call and one vector-Jacobian product per step, any operator.

Example
-------
>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> prior = Gaussian(torch.zeros(2, dtype=torch.float64), 1.0)
>>> physics = Matrix(torch.eye(2, dtype=torch.float64)[:1], sigma=0.1)
>>> smc = SMCEnsemble(prior, steps=50, sigma_max=20.0, progress=False)
>>> out = smc.sample(torch.ones(1, 1, dtype=torch.float64), physics, n_samples=256,
...                  generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.log_weights.shape, out.nfe
(torch.Size([256, 1, 2]), torch.Size([256, 1]), 50)
>>> round(float(out.mean()[0, 0]), 1)     # exact posterior mean 1 / 1.01 = 0.99
1.0
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from invdiff.diffusion.denoiser import gaussian_fit
from invdiff.diffusion.schedules import karras_sigmas
from invdiff.diffusion.solvers import ancestral_sigmas
from invdiff.samplers.registry import register
from invdiff.samplers.base import PosteriorSamples, Problem, Recorder, Sampler, check_sigmas
from invdiff.utils.progress import progress as progress_bar
from invdiff.utils.random import rand, randn

__all__ = ["SMCEnsemble", "TwistedSMC", "ess", "resample", "systematic_resample", "multinomial_resample"]

Resampling = Literal["systematic", "multinomial"]


# --------------------------------------------------------------------------------------------
# Weights and resampling (reusable)
# --------------------------------------------------------------------------------------------
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
    if method not in _RESAMPLERS:
        raise ValueError(f"resampling: expected one of {sorted(_RESAMPLERS)}, got {method!r}")
    return _RESAMPLERS[method](torch.softmax(log_weights, dim=0), generator)


_RESAMPLERS = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def _gather(problem: Problem, idx: Tensor, *tensors: Tensor) -> list[Tensor]:
    """Reindex rows ``k * B + b`` of each (N*B, ...) tensor by ancestors ``idx`` (N, B)."""
    B = problem.batch
    rows = (idx * B + torch.arange(B, device=idx.device)[None, :]).reshape(-1)
    return [t[rows] for t in tensors]


def _prior_kernel(x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, eta: float,
                  x0_var: float = 0.0) -> tuple[Tensor, float]:
    """Mean and variance of the DDIM(eta)/ancestral prior transition ``sigma -> sigma_next``.

    The DDIM(eta) kernel given the clean signal is
    :math:`\\mathcal N(x_0 + \\tfrac{\\sigma_{down}}{\\sigma}(x - x_0), \\sigma_{up}^2 I)`; averaging over
    :math:`x_0 \\mid x` with mean :math:`\\hat x_0` and isotropic variance ``x0_var`` gives mean
    :math:`\\hat x_0 + \\tfrac{\\sigma_{down}}{\\sigma}(x - \\hat x_0)` and variance
    :math:`\\sigma_{up}^2 + (1 - \\sigma_{down}/\\sigma)^2\\, v` (``x0_var = 0``: the plain sampler).
    """
    sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next, eta)
    return x0_hat + (sigma_down / sigma) * (x - x0_hat), sigma_up**2 + (1.0 - sigma_down / sigma) ** 2 * x0_var


def analytic_x0_var(problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, sigma: float) -> float:
    """Mean posterior variance of :math:`x_0` per coordinate, from the ensemble (Analytic-DPM,
    Bao et al. 2022): by Tweedie, :math:`\\mathbb E\\,\\mathrm{Var}[x_0 \\mid x]/d = \\sigma^2 -
    \\mathbb E\\|D(x, \\sigma) - x\\|^2 / d`, the expectation taken over the weighted particles of all
    measurements; clamped to :math:`[0, \\sigma^2]`. Exact in expectation for a Gaussian prior
    (:math:`v = s^2 \\sigma^2 / (s^2 + \\sigma^2)`); no extra denoiser call."""
    w = torch.softmax(problem.fold(log_w), 0).reshape(-1) / problem.batch  # rows k * B + b
    r2 = float((w * (x0_hat - x).pow(2).flatten(1).sum(1)).sum()) / x[0].numel()
    return min(max(sigma**2 - r2, 0.0), sigma**2)


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


# --------------------------------------------------------------------------------------------
# Exact Gaussian products: N(m, T I) times N(y; A x, v I)
# --------------------------------------------------------------------------------------------
class _SVDProduct:
    """Gaussian product and normaliser for a dense ``A = U diag(s) V^T`` (no solves, any ``T >= 0``).

    Called with the measurement ``y`` (n, m) and ``scale``: the noise variance is
    ``scale * sigma_y^2`` (``scale`` a float shared by all rows).
    """

    def __init__(self, matrix: Tensor, problem: Problem) -> None:
        A = matrix.to(problem.device, torch.float64)
        U, s, Vh = torch.linalg.svd(A, full_matrices=False)
        dt = problem.dtype
        self.U, self.s, self.Vh, self.A = U.to(dt), s.to(dt), Vh.to(dt), A.to(dt)
        self.sy2 = problem.sigma_y.reshape(-1, 1) ** 2  # (n, 1)

    def __call__(self, m: Tensor, T: float, y: Tensor, scale: float = 1.0, generator=None,
                 draw: bool = True) -> tuple[Tensor | None, Tensor]:
        """``(x ~ N(m, T I) N(y; A x, v I), log N(y; A m, v I + T A A^T) + c)``, ``v = scale sigma_y^2``."""
        shape = m.shape
        m = m.reshape(shape[0], -1)
        v = scale * self.sy2  # (n, 1)
        r = y - m @ self.A.T  # (n, m)
        ur = r @ self.U  # (n, r)
        perp = r - ur @ self.U.T
        den = v + T * self.s**2  # (n, r)
        quad = (perp * perp).sum(1) / v[:, 0] + (ur * ur / den).sum(1)
        if not draw:
            return None, -0.5 * quad
        x = m + (ur * (T * self.s / den)) @ self.Vh
        if T > 0:
            z = randn(m.shape, generator, m.device, m.dtype)
            gain = (T * v / den).sqrt() - math.sqrt(T)  # (n, r)
            x = x + math.sqrt(T) * z + ((z @ self.Vh.T) * gain) @ self.Vh
        return x.reshape(shape), -0.5 * quad


class _ProxProduct:
    r"""The same for any deepinv ``LinearPhysics``, by ``physics.prox_l2`` (CG, or its own SVD).

    .. math::
        \hat x = \arg\min_x \frac{\|y - A x\|^2}{2v} + \frac{\|x - m\|^2}{2T}
        = \mathrm{prox}_{l2}(m, y, T / v), \qquad
        (y - A m)^\top (v I + T A A^\top)^{-1} (y - A m)
        = \frac{\|y - A\hat x\|^2}{v} + \frac{\|\hat x - m\|^2}{T},

    and a draw is :math:`\hat x` plus the same solve applied to noise (perturb-and-MAP).
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.sy2 = problem.sigma_y**2  # (n, 1, ..., 1) on the measurement side
        flat = self.sy2.flatten()
        self.uniform = bool((flat == flat[0]).all())

    def __call__(self, m: Tensor, T: float, y: Tensor, scale: float = 1.0, generator=None,
                 draw: bool = True) -> tuple[Tensor | None, Tensor]:
        physics = self.problem.physics
        v = scale * self.sy2

        def nll(x: Tensor) -> Tensor:
            return 0.5 * ((y - physics.A(x)) ** 2 / v).flatten(1).sum(1)

        if T == 0:
            return m, -nll(m)
        gamma = T / v.flatten()[0] if self.uniform else T / v
        mean = physics.prox_l2(m, y, gamma)
        log_z = -nll(mean) - 0.5 * ((mean - m) ** 2).flatten(1).sum(1) / T
        if not draw:
            return None, log_z
        z = randn(m.shape, generator, m.device, m.dtype)
        zy = randn(y.shape, generator, m.device, m.dtype) * v.sqrt()
        return mean + physics.prox_l2(math.sqrt(T) * z, zy, gamma), log_z


# --------------------------------------------------------------------------------------------
# Common set-up
# --------------------------------------------------------------------------------------------
class _SMCBase(Sampler):
    def __init__(self, prior, steps: int, *, sigma_max: float, sigma_min: float, sigmas: Tensor | None,
                 eta: float, resampling: Resampling, ess_threshold: float, analytic_variance: bool,
                 progress: bool, on_nan: str) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        if sigmas is None:
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
                raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
            if not (0 < sigma_min < sigma_max):
                raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
            sigmas = karras_sigmas(steps, sigma_min, sigma_max)
        else:
            sigmas = check_sigmas(sigmas)
            if float(sigmas[-1]) != 0:
                raise ValueError(f"sigmas: expected the last noise level to be 0, got {float(sigmas[-1])}")
        if not (isinstance(eta, (int, float)) and 0 < eta <= 1):
            raise ValueError(f"eta: expected 0 < eta <= 1, got {eta!r}")
        if resampling not in _RESAMPLERS:
            raise ValueError(f"resampling: expected one of {sorted(_RESAMPLERS)}, got {resampling!r}")
        if not (isinstance(ess_threshold, (int, float)) and 0 <= ess_threshold <= 1):
            raise ValueError(f"ess_threshold: expected a number in [0, 1], got {ess_threshold!r}")
        self.sigmas = sigmas.to(torch.float64)
        self.steps = len(self.sigmas) - 1
        self.eta, self.resampling, self.ess_threshold = float(eta), resampling, float(ess_threshold)
        self.analytic_variance = bool(analytic_variance)

    def _fit_data(self, problem: Problem, sigma: float, generator) -> tuple[Tensor, float]:
        """Isotropic Gaussian fit ``(m, s^2)`` of the prior at ``sigma`` (one batched denoiser call)."""
        return gaussian_fit(self.denoiser, problem.x_shape, sigma, n=max(16, min(problem.n, 256)),
                            generator=generator, dtype=problem.dtype, device=problem.device)

    def _kernel(self, problem: Problem, x: Tensor, x0_hat: Tensor, log_w: Tensor, sigma: float,
                sigma_next: float) -> tuple[Tensor, float]:
        """The prior transition's mean and variance (with the ensemble's x0 variance if ``analytic_variance``)."""
        v = analytic_x0_var(problem, x, x0_hat, log_w, sigma) if self.analytic_variance else 0.0
        return _prior_kernel(x, x0_hat, sigma, sigma_next, self.eta, v)

    def _maybe_resample(self, problem: Problem, log_w: Tensor, i: int, trace: dict, generator, *tensors):
        """Record the ESS; resample ``tensors`` (rows of the working batch) when it is low."""
        lw = problem.fold(log_w)
        e = ess(lw)
        trace["ess"].append(e.cpu())
        if bool((e < self.ess_threshold * problem.n_samples).any()):
            low = e < self.ess_threshold * problem.n_samples
            idx = resample(lw, self.resampling, generator)
            keep = torch.arange(problem.n_samples, device=idx.device)[:, None].expand_as(idx)
            idx = torch.where(low[None, :], idx, keep)  # only the measurements whose ESS is low
            out = _gather(problem, idx, log_w, *tensors)
            lw_new = problem.fold(out[0])
            lw_new = torch.where(low[None, :], torch.zeros_like(lw_new), lw_new)
            trace["resampled"].append(i)
            return [problem.unfold(lw_new)] + out[1:]
        return [log_w, *tensors]

    def _check_log_w(self, log_w: Tensor, i: int, trace: dict) -> Tensor:
        """NaN/+inf log-weights: raise naming the step, or (``on_nan="clip"``) give those particles weight 0."""
        bad = torch.isnan(log_w) | (log_w == math.inf)
        if not bool(bad.any()):
            return log_w
        if self.on_nan == "raise":
            self.check(log_w[:, None], i, trace=trace, what="log-weights")
        trace.setdefault("nonfinite", []).append((i, int(bad.sum())))
        return torch.where(bad, torch.full_like(log_w, -math.inf), log_w)

    def _finish(self, problem: Problem, x: Tensor, log_w: Tensor, trace: dict) -> PosteriorSamples:
        trace["ess"].append(ess(problem.fold(log_w)).cpu())
        trace["ess"] = torch.stack(trace["ess"])
        lw = problem.fold(log_w)
        lw = lw - torch.logsumexp(lw, 0, keepdim=True)
        return PosteriorSamples(problem.fold(x.detach()), lw.detach(), nfe=self.denoiser.nfe, trace=trace)


# --------------------------------------------------------------------------------------------
# SMC ensemble (Chen et al. 2025)
# --------------------------------------------------------------------------------------------
@register("smc", "SMC ensemble (Chen et al. 2025): weighted particles, exact split for linear-Gaussian")
class SMCEnsemble(_SMCBase):
    r"""Approximation-free ensemble sampler (Chen, Ren, Min, Ying, Izzo 2025) as weighted SMC.

    Targets :math:`q_\sigma(x) \propto p_\sigma(x)\, e^{-\mu_\sigma(x)}`, where
    :math:`e^{-\mu_\sigma}` is the likelihood of the *noisy* particle under an isotropic Gaussian
    model :math:`\mathcal N(m, s^2 I)` of the data, with the noise a level :math:`c\sigma` adds:

    .. math::
        e^{-\mu_\sigma(x)} = \mathcal N\big(y;\, A(\alpha x + (1 - \alpha) m),\,
            \sigma_y^2 I + \alpha c^2 \sigma^2 A A^\top\big), \qquad
        \alpha = \frac{s^2}{s^2 + c^2 \sigma^2}.

    Every choice of :math:`(m, s, c)` gives the same end point :math:`q_0 = p(x \mid y)`
    (:math:`\alpha = 1`, no inflation at :math:`\sigma = 0`); they differ in how far the weights
    must carry the likelihood. ``inflation = c = 0`` is the paper's :math:`\mu_y(x)` at every
    level: in VE variables its weights carry the likelihood through
    :math:`\sigma_{max}^2 / \sigma_y^2` units of time and the ensemble collapses onto a few
    ancestors. The default, ``c = 1`` with ``data_scale = math.inf``, is the likelihood of a flat
    prior (:math:`x_0 = x_\sigma - \sigma\varepsilon`). ``data_scale=None`` fits :math:`(m, s)` from
    the denoiser at :math:`\sigma_{max}` (:func:`~invdiff.diffusion.denoiser.gaussian_fit`, one
    batched call, counted in ``nfe``), which makes :math:`e^{-\mu_\sigma}` the exact
    :math:`p(y \mid x_\sigma)` of the Gaussian model: at large :math:`\sigma` the likelihood is then
    nearly flat, as the true one is, instead of tilting the particles. Measured
    (``docs/benchmarks/samplers-gmm.md``): on the MCGdiff mixture the fit resamples 2-3 times
    less and lowers the SW distance by 10-40% (mode-weight error mostly lower too); on an exact
    posterior over 384 CT phantoms it brings the TV distance to the exact weights from 0.95 to
    0.30; but on the shipped image priors with 4 particles and 10-20 steps (the demo) it costs
    4-7 dB of PSNR, because nearly all of the likelihood then arrives in the last few steps.
    Hence the flat default for trained image priors; pass ``data_scale=None`` for multimodal or
    empirical priors and enough particles.

    Each step is split exactly (``split="exact"``, linear operator and Gaussian noise). The
    likelihood is affine-Gaussian in :math:`x`, :math:`e^{-\mu_\sigma(x)} \propto \mathcal N(y_\sigma;
    A x, v_\sigma I + k_\sigma A A^\top)` with :math:`y_\sigma = (y - (1 - \alpha) A m) / \alpha`,
    :math:`v_\sigma = \sigma_y^2 / \alpha^2`, :math:`k_\sigma = c^2 \sigma^2 / \alpha`, so with the prior
    kernel :math:`\mathcal N(m_i, \tau I)` the move and the weight are closed form:

    .. math::
        x' \sim \mathcal N(m_i, \tau I)\, e^{-\mu_{\sigma_{i+1}}(x')}, \qquad
        \log w \mathrel{+}= \log \mathcal N\big(y_{\sigma_{i+1}};\, A m_i,\, v_{\sigma_{i+1}} I
        + (\tau + k_{\sigma_{i+1}}) A A^\top\big) + \mu_{\sigma_i}(x),

    weights added before resampling and moving (a fully adapted auxiliary particle filter for
    the path whose marginals are :math:`q_\sigma`; to first order in :math:`\tau` it is the
    paper's drift :math:`-v^2 \nabla\mu` and weight rate). The prior kernel is DDIM(``eta``) with,
    by default (``analytic_variance=True``), the ensemble's estimate of
    :math:`\mathrm{Var}[x_0 \mid x]` added (:func:`analytic_x0_var`, Analytic-DPM): the plain DDPM
    kernel loses about ``10 / steps`` of the variance per run, which showed as 0.88 coverage of
    90% intervals at 100 steps.
    ``split="explicit"`` runs the paper's Euler scheme (module docstring) for any operator and
    likelihood, on :math:`\mu_\sigma = \beta_\sigma \mu_y` with the scalar annealing
    :math:`\beta_\sigma = \sigma_y^2 / (\sigma_y^2 + c^2 \sigma^2 \|A\|^2)` (``c = 0``: the paper's
    :math:`\mu_y`, stable only for :math:`\tau \|A\|^2 / \sigma_y^2 \ll 1`), plus the weight
    :math:`e^{-(\beta_{i+1} - \beta_i)\mu_y(x')}` of each change of temperature.

    Limits. The likelihood is taken at the noisy particle, so between the modes of a multimodal
    prior it discriminates only once :math:`\sigma` is below the modes' spread, when the particles
    can no longer move between modes; the weights then move the mass, and repeated resampling
    makes the share of each mode drift from ensemble to ensemble. For such priors prefer
    :class:`TwistedSMC`, whose twist uses :math:`\hat x_0` (one vector-Jacobian product per step).

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: noise levels (denoiser calls per particle): Karras levels from ``sigma_max``
        to ``sigma_min``, then 0.
    :param sigma_max: initial level: particles start from :math:`\mathcal N(m, (\sigma_{max}^2 + s^2) I)
        e^{-\mu_{\sigma_{max}}}`; take it several times the data's radius.
    :param sigma_min: last positive level.
    :param sigmas: explicit descending noise levels ending at 0 (overrides the three above).
    :param eta: noise of the prior kernel, :math:`v/g` (1: DDPM / SDE form; must be > 0 so that
        resampled copies separate).
    :param resampling: ``"systematic"`` (default) or ``"multinomial"``.
    :param ess_threshold: resample when ``ESS < ess_threshold * n_samples``.
    :param analytic_variance: add the ensemble's :math:`\mathrm{Var}[x_0 \mid x]` to the kernel.
    :param inflation: ``c`` above.
    :param data_scale: ``s`` above: ``math.inf`` (default) gives the flat-prior likelihood;
        ``None`` fits it (and ``m``) from the denoiser.
    :param data_mean: ``m`` above (a float or a tensor of the signal's shape); ``None`` fits it.
    :param split: ``"exact"`` (linear operator, Gaussian noise), ``"explicit"`` (any operator) or
        ``"auto"`` (exact when possible).
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.

    ``n_samples`` of :meth:`sample` is the number of particles ``N`` per measurement; the result
    carries normalised ``log_weights``, ``trace["ess"]`` of shape ``(steps + 1, B)`` and
    ``trace["data_model"]`` (the ``m`` and ``s`` used). Cost per step: one batched denoiser call;
    dense operators add ``O(N d min(m, d))`` (SVD once), other linear operators four ``prox_l2``
    solves.
    """

    def __init__(self, prior, steps: int = 100, *, sigma_max: float = 80.0, sigma_min: float = 0.002,
                 sigmas: Tensor | None = None, eta: float = 1.0, resampling: Resampling = "systematic",
                 ess_threshold: float = 0.5, analytic_variance: bool = True, inflation: float = 1.0,
                 data_scale: float | None = math.inf,
                 data_mean: float | Tensor | None = None,
                 split: Literal["auto", "exact", "explicit"] = "auto",
                 progress: bool = True, on_nan: str = "raise") -> None:
        super().__init__(prior, steps, sigma_max=sigma_max, sigma_min=sigma_min, sigmas=sigmas, eta=eta,
                         resampling=resampling, ess_threshold=ess_threshold, analytic_variance=analytic_variance,
                         progress=progress, on_nan=on_nan)
        if split not in ("auto", "exact", "explicit"):
            raise ValueError(f"split: expected 'auto', 'exact' or 'explicit', got {split!r}")
        if not (isinstance(inflation, (int, float)) and inflation >= 0):
            raise ValueError(f"inflation: expected a number >= 0, got {inflation!r}")
        if data_scale is not None and not (isinstance(data_scale, (int, float)) and data_scale > 0):
            raise ValueError(f"data_scale: expected None (fitted), a number > 0 or math.inf, got {data_scale!r}")
        self.split, self.inflation = split, float(inflation)
        self.data_scale, self.data_mean = data_scale, data_mean

    def _product(self, problem: Problem):
        linear = hasattr(problem.physics, "A_adjoint") and hasattr(problem.physics, "prox_l2")
        ok = linear and problem.likelihood == "gaussian"
        if self.split == "explicit" or (self.split == "auto" and not ok):
            return None
        if not ok:
            raise ValueError("split='exact' needs a linear operator (deepinv LinearPhysics) and Gaussian noise; "
                             f"got {type(problem.physics).__name__} with a {problem.likelihood} likelihood: use split='explicit'")
        M = getattr(problem.physics, "matrix", None)
        if isinstance(M, Tensor) and M.ndim == 2 and len(problem.x_shape) == 1:
            return _SVDProduct(M, problem)
        return _ProxProduct(problem)

    @staticmethod
    def _bridge(product, m: Tensor, tau: float, level: tuple, generator) -> Tensor:
        """Draw x' ~ N(m, tau I) L(x') for the level's likelihood L(x) = N(y; A x, v I + k A A^T),
        through x'' = x' + sqrt(k) u ~ N(m, (tau + k) I) N(y; A x'', v I)."""
        y, scale, kappa = level
        T = tau + kappa
        x2, _ = product(m, T, y, scale, generator)
        if kappa == 0 or T == 0:
            return x2
        z = randn(m.shape, generator, m.device, m.dtype)
        return m + (tau / T) * (x2 - m) + math.sqrt(tau * kappa / T) * z

    def _gaussian_data(self, problem: Problem, sigma_max: float, generator) -> tuple[Tensor | float, float]:
        """``(m, s^2)`` of the isotropic Gaussian data model (fitted from the denoiser where not given)."""
        if self.data_scale is not None and math.isinf(self.data_scale):
            return 0.0, math.inf
        m, s2 = self.data_mean, None if self.data_scale is None else float(self.data_scale) ** 2
        if m is None or s2 is None:
            m_fit, s2_fit = self._fit_data(problem, sigma_max, generator)
            m = m_fit if m is None else m
            s2 = s2_fit if s2 is None else s2
        m = torch.as_tensor(m, dtype=problem.dtype, device=problem.device)
        return m.expand(problem.x_shape) if m.ndim == 0 else m.reshape(problem.x_shape), s2

    def _level_fn(self, problem: Problem, m0: Tensor | float, s2: float):
        """``sigma -> (y_sigma, scale, k)`` with :math:`e^{-\\mu_\\sigma(x)} \\propto
        \\mathcal N(y_\\sigma; A x, \\mathrm{scale}\\, \\sigma_y^2 I + k A A^\\top)` (see the class docstring)."""
        c2 = self.inflation**2
        Am0 = None
        if not math.isinf(s2) and c2 > 0:
            with torch.no_grad():
                Am0 = problem.physics.A(m0.expand(problem.n, *problem.x_shape))

        def level(sigma: float) -> tuple[Tensor, float, float]:
            if Am0 is None or sigma == 0:
                return problem.y, 1.0, c2 * sigma**2
            alpha = s2 / (s2 + c2 * sigma**2)
            return (problem.y - (1.0 - alpha) * Am0) / alpha, 1.0 / alpha**2, c2 * sigma**2 / alpha

        return level

    def _explicit_terms(self, problem: Problem, x: Tensor, linear_gaussian: bool, generator):
        """``(grad mu, Laplacian mu)`` at x; the Laplacian is 0 (a constant) for linear-Gaussian."""
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            nll = problem.nll(x_in)
            (g,) = torch.autograd.grad(nll.sum(), x_in, create_graph=not linear_gaussian)
            if linear_gaussian:
                return g.detach(), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            z = 2.0 * (rand(x.shape, generator, x.device, x.dtype) < 0.5).to(x.dtype) - 1.0  # Rademacher
            (hz,) = torch.autograd.grad(_rowdot(g, z).sum(), x_in)
        return g.detach(), _rowdot(z, hz).detach()

    def _annealing(self, problem: Problem, sigmas: list[float]) -> list[Tensor]:
        """Explicit split: likelihood temperatures ``beta_i = v / (v + c^2 sigma_i^2 L)`` per row (``L = ||A||^2``)."""
        if self.inflation == 0:
            return [torch.ones(problem.n, dtype=problem.dtype, device=problem.device)] * len(sigmas)
        v = problem.sigma_y.flatten() ** 2 if problem.likelihood == "gaussian" else \
            (problem.gain * torch.maximum(problem.y, problem.gain)).flatten(1).mean(1)
        L = 1.0
        if hasattr(problem.physics, "compute_norm") and hasattr(problem.physics, "A_adjoint"):
            x0 = randn((1, *problem.x_shape), torch.Generator(device="cpu").manual_seed(0), problem.device, problem.dtype)
            L = float(problem.physics.compute_norm(x0, verbose=False, tol=1e-4))
        return [v / (v + self.inflation**2 * s**2 * L) for s in sigmas]

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        sigmas = self.sigmas.tolist()
        D = self.denoiser
        prod = self._product(problem)
        lin_gauss = hasattr(problem.physics, "A_adjoint") and problem.likelihood == "gaussian"
        trace: dict = {"ess": [], "resampled": [], "split": "exact" if prod is not None else "explicit"}
        n, shape, dt, dev = problem.n, problem.x_shape, problem.dtype, problem.device
        log_w = torch.zeros(n, dtype=dt, device=dev)

        # Stage I: x ~ N(m, (sigma_max^2 + s^2) I) exp(-mu_{sigma_max}(x)), the Gaussian model of p_sigma_max
        if prod is not None:
            m0, s2 = self._gaussian_data(problem, sigmas[0], generator)
            level = self._level_fn(problem, m0, s2)
            lev = level(sigmas[0])
            start = problem.zeros() + m0 if not math.isinf(s2) else problem.zeros()
            var0 = sigmas[0] ** 2 + (s2 if not math.isinf(s2) else 0.0)
            x = self._bridge(prod, start, var0, lev, generator)
            trace["data_model"] = {"mean": m0, "scale": math.sqrt(s2)}
        else:  # explicit: prior draws weighted by the (annealed) likelihood
            beta = self._annealing(problem, sigmas)
            x = sigmas[0] * randn((n, *shape), generator, dev, dt)
            log_w = -beta[0] * problem.nll(x).detach()
        record(0, x)

        # Stage II
        for i in progress_bar(range(self.steps), self.progress, desc="SMC ensemble"):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            with torch.no_grad():
                x0_hat = D(x, sigma)
            m, tau = self._kernel(problem, x, x0_hat, log_w, sigma, sigma_next)
            if prod is not None:
                # weight (a function of x only), then resample, then move: fully adapted auxiliary PF
                y_i, sc_i, k_i = lev
                lev = level(sigma_next)
                _, log_mu_x = prod(x, k_i, y_i, sc_i, draw=False)
                _, log_z = prod(m, tau + lev[2], lev[0], lev[1], draw=False)
                log_w = self._check_log_w(log_w + log_z - log_mu_x, i, trace)
                log_w, m = self._maybe_resample(problem, log_w, i, trace, generator, m)
                x_new = self._bridge(prod, m, tau, lev, generator)
            else:
                # the paper's Euler scheme for mu_i = beta_i * nll
                g, lap = self._explicit_terms(problem, x, lin_gauss, generator)
                g, lap = beta[i].reshape(-1, *([1] * len(shape))) * g, beta[i] * lap
                log_w = log_w + 0.5 * tau * (_rowdot(g, g) - lap) - _rowdot(m - x, g)
                log_w = self._check_log_w(log_w, i, trace)
                log_w, m, g = self._maybe_resample(problem, log_w, i, trace, generator, m, g)
                x_new = m - tau * g
                if tau > 0:
                    x_new = x_new + math.sqrt(tau) * randn(m.shape, generator, dev, dt)
                if self.inflation > 0:  # annealing: q_{i+1} / q_i at the new particle
                    x_new = self.check(x_new, i, fallback=m, trace=trace)
                    log_w = log_w - (beta[i + 1] - beta[i]) * problem.nll(x_new).detach()
            x = self.check(x_new, i, fallback=m, trace=trace)
            record(i + 1, x, last=i == self.steps - 1)
        return self._finish(problem, x, log_w, trace)


# --------------------------------------------------------------------------------------------
# Twisted SMC (TDS, Wu et al. 2023)
# --------------------------------------------------------------------------------------------
@register("twisted-smc", "Twisted SMC (TDS, Wu et al. 2023): particles twisted by the x0 estimate")
class TwistedSMC(_SMCBase):
    """Twisted diffusion sampler (Wu, Trippe, Naesseth, Blei, Cunningham 2023) over ``D(x, sigma)``.

    Twisting function and its gradient from one vector-Jacobian product through the denoiser:

    .. math::
        \\log \\tilde p_\\sigma(y \\mid x) = -\\frac{\\|y - \\mathcal A(D(x, \\sigma))\\|^2}{2(\\sigma_y^2 + \\kappa_\\sigma)},
        \\qquad \\kappa_\\sigma = \\frac{s_0^2 \\sigma^2}{s_0^2 + \\sigma^2},

    where :math:`\\kappa_\\sigma` is the variance of :math:`x_0` given :math:`x` under a
    :math:`\\mathcal N(\\cdot, s_0^2 I)` prior (``twist_scale = s_0``; it makes the twist exact for a
    Gaussian prior with an operator of orthonormal rows; the default ``None`` fits it from the
    denoiser, :func:`invdiff.diffusion.denoiser.gaussian_fit`, one extra call; ``twist_scale=0`` is TDS's plain
    :math:`\\sigma_y^2`). Proposal and weight, with the prior kernel :math:`\\mathcal N(m, \\tau I)`:

    .. math::
        x' \\sim \\mathcal N(m + \\tau \\nabla_x \\log \\tilde p_\\sigma, \\tau I), \\qquad
        w \\mathrel{*}= \\frac{\\mathcal N(x'; m, \\tau I)\\, \\tilde p_{\\sigma'}(y \\mid x')}
        {\\mathcal N(x'; m + \\tau \\nabla \\log \\tilde p_\\sigma, \\tau I)\\, \\tilde p_\\sigma(y \\mid x)},

    and :math:`\\tilde p_0` is the exact likelihood. Gaussian likelihood only; any operator.
    Parameters as :class:`SMCEnsemble`, plus ``twist_scale``.
    """

    def __init__(self, prior, steps: int = 100, *, sigma_max: float = 80.0, sigma_min: float = 0.002,
                 sigmas: Tensor | None = None, eta: float = 1.0, resampling: Resampling = "systematic",
                 ess_threshold: float = 0.5, analytic_variance: bool = True, twist_scale: float | None = None,
                 progress: bool = True,
                 on_nan: str = "raise") -> None:
        super().__init__(prior, steps, sigma_max=sigma_max, sigma_min=sigma_min, sigmas=sigmas, eta=eta,
                         resampling=resampling, ess_threshold=ess_threshold, analytic_variance=analytic_variance,
                         progress=progress, on_nan=on_nan)
        if twist_scale is not None and not (isinstance(twist_scale, (int, float)) and twist_scale >= 0):
            raise ValueError(f"twist_scale: expected None (fitted) or a number >= 0, got {twist_scale!r}")
        self.twist_scale = None if twist_scale is None else float(twist_scale)

    def _twist(self, problem: Problem, x: Tensor, sigma: float, s0: float) -> tuple[Tensor, Tensor, Tensor]:
        """``(x0_hat, log p~, grad log p~)`` at noise level ``sigma`` (0: the exact likelihood)."""
        if sigma == 0:
            return x, -problem.nll(x).detach(), torch.zeros_like(x)
        kappa = s0**2 * sigma**2 / (s0**2 + sigma**2) if s0 > 0 else 0.0
        factor = (problem.sigma_y.flatten() ** 2 / (problem.sigma_y.flatten() ** 2 + kappa))  # (n,)
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0_hat = self.denoiser(x_in, sigma)
            log_twist = -factor * problem.nll(x0_hat)
            (g,) = torch.autograd.grad(log_twist.sum(), x_in)
        return x0_hat.detach(), log_twist.detach(), g

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        if problem.likelihood != "gaussian":
            raise ValueError(f"TwistedSMC: needs a Gaussian likelihood, got {problem.likelihood}")
        sigmas = self.sigmas.tolist()
        trace: dict = {"ess": [], "resampled": []}
        n, shape, dt, dev = problem.n, problem.x_shape, problem.dtype, problem.device
        s0 = self.twist_scale
        if s0 is None:
            s0 = math.sqrt(self._fit_data(problem, sigmas[0], generator)[1])
        trace["twist_scale"] = s0
        x = sigmas[0] * randn((n, *shape), generator, dev, dt)
        x0_hat, log_twist, g = self._twist(problem, x, sigmas[0], s0)
        log_w = log_twist.clone()
        record(0, x)
        for i in progress_bar(range(self.steps), self.progress, desc="Twisted SMC"):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            log_w, x, x0_hat, log_twist, g = self._maybe_resample(problem, log_w, i, trace, generator,
                                                                  x, x0_hat, log_twist, g)
            m, tau = self._kernel(problem, x, x0_hat, log_w, sigma, sigma_next)
            if tau > 0:
                noise = math.sqrt(tau) * randn(x.shape, generator, dev, dt)
                x_new = m + tau * g + noise
                # log N(x'; m, tau) - log N(x'; m + tau g, tau) = -g.(x' - m) + tau |g|^2 / 2
                log_prop = -_rowdot(g, x_new - m) + 0.5 * tau * _rowdot(g, g)
            else:
                x_new, log_prop = m, torch.zeros_like(log_w)
            x_new = self.check(x_new, i, fallback=m, trace=trace)
            x0_new, twist_new, g_new = self._twist(problem, x_new, sigma_next, s0)
            log_w = self._check_log_w(log_w + log_prop + twist_new - log_twist, i, trace)
            x, x0_hat, log_twist, g = x_new, x0_new, twist_new, g_new
            record(i + 1, x, last=i == self.steps - 1)
        return self._finish(problem, x, log_w, trace)
