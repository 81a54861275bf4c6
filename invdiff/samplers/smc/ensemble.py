"""The SMC ensemble sampler of Chen, Ren, Min, Ying & Izzo (2025) as weighted SMC (:class:`SMCEnsemble`)."""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from invdiff.samplers.base import PosteriorSamples, Problem, Recorder
from invdiff.samplers.registry import register
from invdiff.samplers.smc.base import SMCBase, rowdot
from invdiff.samplers.smc.products import ProxProduct, SVDProduct
from invdiff.samplers.smc.resampling import Resampling
from invdiff.utils.progress import progress as progress_bar

__all__ = ["SMCEnsemble"]


@register("smc", "SMC ensemble (Chen et al. 2025): weighted particles, exact split for linear-Gaussian")
class SMCEnsemble(SMCBase):
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
    nearly flat, as the true one is, instead of tilting the particles. It helps on multimodal and
    empirical priors and costs PSNR on the shipped image priors with few particles and steps
    (the measurements are in ``docs/benchmarks/samplers-gmm.md``).
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
    kernel loses about ``10 / steps`` of the variance per run (``docs/benchmarks/samplers-gmm.md``).
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
    :param shard_particles: under ``torchrun``, split the ``n_samples`` particles over the ranks
        (:mod:`invdiff.samplers.smc.base`); the result equals the one-process run with the same
        seed (exactly with ``physics.matrix``; ``prox_l2`` solves by conjugate gradients stop on
        their batch's residual, so there it agrees to the solver's tolerance).

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
                 progress: bool = True, on_nan: str = "raise", shard_particles: bool = False) -> None:
        super().__init__(prior, steps, sigma_max=sigma_max, sigma_min=sigma_min, sigmas=sigmas, eta=eta,
                         resampling=resampling, ess_threshold=ess_threshold, analytic_variance=analytic_variance,
                         progress=progress, on_nan=on_nan, shard_particles=shard_particles)
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
        ok = linear and problem.sigma_y is not None
        if self.split == "explicit" or (self.split == "auto" and not ok):
            return None
        if not ok:
            raise ValueError("split='exact' needs a linear operator (deepinv LinearPhysics) and Gaussian noise; "
                             f"got {type(problem.physics).__name__} with {type(problem.likelihood).__name__}: use split='explicit'")
        M = getattr(problem.physics, "matrix", None)
        if isinstance(M, Tensor) and M.ndim == 2 and len(problem.x_shape) == 1:
            return SVDProduct(M, problem, randn=self._shard.randn)
        return ProxProduct(problem, randn=self._shard.randn)

    @staticmethod
    def _bridge(product, m: Tensor, tau: float, level: tuple, generator) -> Tensor:
        """Draw x' ~ N(m, tau I) L(x') for the level's likelihood L(x) = N(y; A x, v I + k A A^T),
        through x'' = x' + sqrt(k) u ~ N(m, (tau + k) I) N(y; A x'', v I)."""
        y, scale, kappa = level
        T = tau + kappa
        x2, _ = product(m, T, y, scale, generator)
        if kappa == 0 or T == 0:
            return x2
        z = product.randn(m.shape, generator, m.device, m.dtype)
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
        if linear_gaussian:
            return problem.nll_grad(x)[0], torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            nll = problem.nll(x_in)
            (g,) = torch.autograd.grad(nll.sum(), x_in, create_graph=True)
            z = 2.0 * (self._shard.rand(x.shape, generator, x.device, x.dtype) < 0.5).to(x.dtype) - 1.0  # Rademacher
            (hz,) = torch.autograd.grad(rowdot(g, z).sum(), x_in)
        return g.detach(), rowdot(z, hz).detach()

    def _annealing(self, problem: Problem, sigmas: list[float]) -> list[Tensor]:
        """Explicit split: likelihood temperatures ``beta_i = v / (v + c^2 sigma_i^2 L)`` per row (``L = ||A||^2``)."""
        if self.inflation == 0:
            return [torch.ones(problem.n, dtype=problem.dtype, device=problem.device)] * len(sigmas)
        v = problem.likelihood.mean_variance(problem.y)
        L = 1.0
        if hasattr(problem.physics, "A_adjoint_A"):  # seeded power iteration (deepinv's uses the global RNG)
            from invdiff.operators.base import power_norm

            L = power_norm(problem.physics, problem.x_shape, tol=1e-4, dtype=problem.dtype, device=problem.device) ** 2
        return [v / (v + self.inflation**2 * s**2 * L) for s in sigmas]

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        sigmas = self.sigmas.tolist()
        D = self.denoiser
        prod = self._product(problem)
        lin_gauss = hasattr(problem.physics, "A_adjoint") and problem.likelihood.fixed_variance
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
            x = sigmas[0] * self._shard.randn((n, *shape), generator, dev, dt)
            log_w = -beta[0] * problem.nll(x).detach()
        record(0, x)

        # Stage II
        for i in progress_bar(range(self.steps), self.progress, desc="SMC ensemble"):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            with torch.no_grad():
                x0_hat = D(x, sigma)
            m, tau = self._kernel(problem, x, x0_hat, log_w, i)
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
                log_w = log_w + 0.5 * tau * (rowdot(g, g) - lap) - rowdot(m - x, g)
                log_w = self._check_log_w(log_w, i, trace)
                log_w, m, g = self._maybe_resample(problem, log_w, i, trace, generator, m, g)
                x_new = m - tau * g
                if tau > 0:
                    x_new = x_new + math.sqrt(tau) * self._shard.randn(m.shape, generator, dev, dt)
                if self.inflation > 0:  # annealing: q_{i+1} / q_i at the new particle
                    x_new = self.check(x_new, i, fallback=m, trace=trace)
                    log_w = log_w - (beta[i + 1] - beta[i]) * problem.nll(x_new).detach()
            x = self.check(x_new, i, fallback=m, trace=trace)
            record(i + 1, x, last=i == self.steps - 1)
        return self._finish(problem, x, log_w, trace)
