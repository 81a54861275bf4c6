r"""Decoupled Annealing Posterior Sampling (DAPS), Zhang et al., CVPR 2025, "Improving Diffusion
Inverse Problem Solving with Decoupled Noise Annealing".

At each annealing level :math:`\sigma_t` (descending), three decoupled moves:

.. math::
    \hat x_0 &= \mathrm{ODE}_{\sigma_t \to 0}(x_t)
        &&\text{(a few steps of the prior's probability-flow ODE)} \\
    x_0 &\sim p(x_0 \mid x_t, y) \propto \exp\!\Big(-\frac{\|x_0 - \hat x_0\|^2}{2 r_t^2}\Big)\, p(y \mid x_0)
        &&\text{(exact draw or Langevin, below)} \\
    x_{t-1} &= x_0 + \sigma_{t-1}\,\varepsilon, \quad \varepsilon \sim \mathcal N(0, I)
        &&\text{(re-noise; } \sigma_{final} = 0 \text{ returns } x_0 \text{)}

The second move (``x0_move``). For a linear operator and Gaussian noise, :math:`y = A x_0 + V^{1/2} n`,
the target is exactly Gaussian, :math:`\mathcal N(m_t, P_t^{-1})` with
:math:`P_t = A^\top V^{-1} A + r_t^{-2} I`, and is drawn exactly by perturb-and-MAP, a conjugate-gradient
solve of :math:`P_t x_0 = A^\top V^{-1}(y + V^{1/2}\xi_1) + r_t^{-2}(\hat x_0 + r_t \xi_2)`
(:func:`invdiff.samplers.consistency.gaussian_draw_cg`; ``x0_move="exact"``, the default there). Otherwise
(any differentiable operator, Poisson noise) ``langevin_steps`` unadjusted Langevin steps,
:math:`x_0 \leftarrow x_0 - h_t \nabla U(x_0) + \sqrt{2 h_t}\,\xi`, on
:math:`U(x_0) = \|x_0 - \hat x_0\|^2/(2 r_t^2) - \log p(y \mid x_0)` (``x0_move="langevin"``, the paper's
move). Because the ODE, not a Langevin step, carries the prior, the iterate can move far between
levels: errors of early levels are not inherited.

Settings of the paper (DAPS-1K): 200 annealing levels (EDM/Karras, :math:`\sigma` from 100 to 0.1
then 0), 5 Euler ODE steps per level, :math:`r_t = \sigma_t`, 100 Langevin steps per level,
learning rate :math:`10^{-4}` (task dependent) decayed linearly to 1% over the annealing
(``DAPS(prior, steps=200, sigma_max=100, sigma_min=0.1, ode_steps=5, r="sigma", x0_move="langevin",
langevin_steps=100, lr=1e-4)``; images in [-1, 1], so :math:`\sigma_{min}` is 0.2 of their scale).

Defaults here, chosen on validation phantoms of the demo tasks (not the test images) and for
calibrated spread (docs/benchmarks/uncertainty.md, section 2): 200 levels over [0.01, 80] (then 0;
the draw of the last level keeps the prior's isotropic spread :math:`r_t` where the data are
silent, so :math:`\sigma_{min}` must be small against the data scale); ``ode_steps=1``,
i.e. :math:`\hat x_0 = D(x_t, \sigma_t)` (the Tweedie mean, the paper's "exact" variant), and
``r="auto"``, :math:`r_t^2 = s^2 \sigma_t^2 / (s^2 + \sigma_t^2)`, the variance of :math:`x_0 \mid x_t`
under an isotropic Gaussian model :math:`\mathcal N(m, s^2 I)` of the prior, with :math:`s^2` fitted
from the denoiser at :math:`\sigma_{max}` (:func:`invdiff.diffusion.denoiser.gaussian_fit`, one
batched call). For Gaussian data this makes the second move an exact Gibbs step, and DAPS samples
the posterior. With :math:`r_t = \sigma_t` the prior's null-space variance follows
:math:`V \leftarrow (V + 2\sigma^2)/(1 + \sigma^2)` at small :math:`\sigma` (unit data variance),
whose fixed point is 2: the paper's setting is over-dispersed by up to 2x in the directions the
data do not see (tests/test_daps.py). The exact draw: at most 20 CG steps (``cg_iters``), relative
residual ``cg_tol=1e-4``. Langevin: 50 steps and
``lr="auto"``: :math:`h_t = c / (1/r_t^2 + L_y)` with :math:`L_y` the likelihood's curvature
(:func:`invdiff.samplers.langevin.likelihood_curvature`) and :math:`c = 0.25` (``lr_scale``): the
largest stable step for every operator and noise level, so that no step size needs retuning
(the paper's fixed rate assumes images in [-1, 1] and :math:`\sigma_y` of 0.01 to 0.05). A float
``lr`` is the paper's rule, :math:`h_t = \mathrm{lr}\,(\rho + (1 - \rho)(1 - t/T))`, ``lr_min_ratio``
:math:`= \rho`.

Unadjusted Langevin with step :math:`h` inflates the variance of a direction of curvature
:math:`\lambda` by :math:`1/(1 - h\lambda/2)`: at most 14% with :math:`c = 0.25`.

Cost per level: ``ode_steps`` denoiser calls (no vector-Jacobian product through the network),
and ``cg_iters`` applications of :math:`A^\top A` (exact draw) or ``langevin_steps`` operator VJPs. ``trace["x0_hat"]``-style statistics for hallucination maps:
``trace["x0_var"]`` is the per-pixel variance of :math:`\hat x_0` over the last ``var_fraction`` of
the levels (no extra network call).

Example
-------
>>> import torch
>>> import invdiff.diffusion.gmm as gmm
>>> import invdiff.operators as ops
>>> daps = DAPS(gmm.Gaussian(torch.full((2,), 0.5), 0.25), steps=10, ode_steps=2, langevin_steps=5, progress=False)
>>> out = daps.sample(torch.ones(1, 1), ops.Matrix(torch.tensor([[1.0, 1.0]]), sigma=0.1), n_samples=3,
...                   generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.nfe          # 10 levels x 2 ODE steps + 1 call of the Gaussian fit
(torch.Size([3, 1, 2]), 21)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.diffusion.schedules import karras_sigmas
from invdiff.samplers.base import PosteriorSamples, Problem, Recorder, Sampler, karras_levels
from invdiff.samplers.consistency import gaussian_draw_cg
from invdiff.samplers.langevin import likelihood_curvature
from invdiff.samplers.likelihood import GaussianLikelihood
from invdiff.samplers.registry import register
from invdiff.utils.progress import progress as progress_bar
from invdiff.utils.random import randn

__all__ = ["DAPS"]


@register("daps", "DAPS (Zhang et al. 2025): prior ODE to x0, Langevin on p(x0 | x_t, y), re-noise")
class DAPS(Sampler):
    """Decoupled Annealing Posterior Sampling (module docstring).

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: annealing levels (Karras levels over ``[sigma_min, sigma_max]``, then 0).
    :param ode_steps: Euler steps of the prior ODE from each level to 0 (denoiser calls per level;
        1: the Tweedie estimate :math:`D(x_t, \\sigma_t)`).
    :param x0_move: the draw of :math:`x_0 \\mid x_t, y`: ``"auto"`` (``"exact"`` for a linear operator with
        Gaussian noise, else ``"langevin"``), ``"exact"`` (perturb-and-MAP, conjugate gradients) or
        ``"langevin"`` (module docstring).
    :param cg_iters, cg_tol: conjugate-gradient steps of the exact draw (at most; a row stops once its
        residual is below ``cg_tol`` times the right-hand side).
    :param langevin_steps: Langevin steps on :math:`p(x_0 \\mid x_t, y)` per level.
    :param lr: ``"auto"`` (curvature-scaled, module docstring) or the paper's learning rate.
    :param lr_scale: :math:`c` of ``lr="auto"`` (0 < c < 2; stable below 2).
    :param lr_min_ratio: the paper's final fraction of ``lr`` (float ``lr`` only).
    :param sigma_max, sigma_min: range of the annealing levels.
    :param sigmas: explicit descending annealing levels ending at 0 (overrides the above).
    :param r: :math:`r_t`: ``"auto"`` (Gaussian model, fitted), ``"sigma"`` (the paper) or a data scale
        :math:`s` (float).
    :param ode_method: solver of the ODE (:func:`invdiff.diffusion.solvers.make_solver`).
    :param var_fraction: the last fraction of levels whose :math:`\\hat x_0` enter ``trace["x0_var"]``.
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    def __init__(self, prior, steps: int = 200, *, ode_steps: int = 1, x0_move: str = "auto", cg_iters: int = 20,
                 cg_tol: float = 1e-4, langevin_steps: int = 50,
                 lr: float | str = "auto", lr_scale: float = 0.25, lr_min_ratio: float = 0.01,
                 sigma_max: float = 80.0, sigma_min: float = 0.01, sigmas: Tensor | None = None,
                 ode_method: str = "euler", r: str | float = "auto", var_fraction: float = 0.25, progress: bool = True,
                 on_nan: str = "raise") -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        for name, v, lo in (("ode_steps", ode_steps, 1), ("langevin_steps", langevin_steps, 0), ("cg_iters", cg_iters, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        if not (lr == "auto" or (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0)):
            raise ValueError(f"lr: expected 'auto' or a finite number > 0, got {lr!r}")
        if not (isinstance(lr_scale, (int, float)) and 0 < lr_scale < 2):
            raise ValueError(f"lr_scale: expected a number in (0, 2), got {lr_scale!r}")
        if not (isinstance(lr_min_ratio, (int, float)) and 0 <= lr_min_ratio <= 1):
            raise ValueError(f"lr_min_ratio: expected a number in [0, 1], got {lr_min_ratio!r}")
        if x0_move not in ("auto", "exact", "langevin"):
            raise ValueError(f"x0_move: expected 'auto', 'exact' or 'langevin', got {x0_move!r}")
        if not (isinstance(cg_tol, (int, float)) and 0 <= cg_tol < 1):
            raise ValueError(f"cg_tol: expected a number in [0, 1), got {cg_tol!r}")
        self.x0_move, self.cg_iters, self.cg_tol = x0_move, cg_iters, float(cg_tol)
        if not (isinstance(var_fraction, (int, float)) and 0 < var_fraction <= 1):
            raise ValueError(f"var_fraction: expected a number in (0, 1], got {var_fraction!r}")
        sigmas = karras_levels(steps, sigmas, sigma_min, sigma_max)
        from invdiff.diffusion.solvers import make_solver

        make_solver(ode_method, [1.0, 0.0])  # fail early on an unknown method
        self.sigmas = sigmas.to(torch.float64)
        self.steps = len(self.sigmas) - 1
        self.ode_steps, self.langevin_steps, self.ode_method = ode_steps, langevin_steps, ode_method
        self.lr, self.lr_scale, self.lr_min_ratio = lr, float(lr_scale), float(lr_min_ratio)
        self.var_fraction = float(var_fraction)
        if not (r in ("sigma", "auto") or (isinstance(r, (int, float)) and r > 0)):
            raise ValueError(f"r: expected 'sigma', 'auto' or a data scale > 0, got {r!r}")
        self.r = r

    def r_t(self, sigma: float, s2: float | None) -> float:
        """:math:`r_t`: ``sigma`` (the paper), or the std of :math:`x_0 \\mid x_t` under a Gaussian data model of
        variance :math:`s^2`, :math:`r_t^2 = s^2 \\sigma^2 / (s^2 + \\sigma^2)`."""
        if s2 is None:
            return sigma
        return math.sqrt(s2 * sigma**2 / (s2 + sigma**2))

    # the three moves ------------------------------------------------------------------------
    def ode_x0(self, x: Tensor, sigma: float) -> Tensor:
        """:math:`\\hat x_0`: ``ode_steps`` steps of the probability-flow ODE from ``sigma`` to 0
        (Karras levels from ``sigma`` down to ``min(0.01, sigma / 2)``, then 0)."""
        from invdiff.diffusion.solvers import sample

        if self.ode_steps == 1:
            with torch.no_grad():
                return self.denoiser(x, sigma)
        levels = karras_sigmas(self.ode_steps, min(0.01, sigma / 2), sigma)
        return sample(self.denoiser, x, levels, method=self.ode_method).x

    def step_size(self, i: int, r: float, L_y: float) -> float:
        """The Langevin step :math:`h_t` at level ``i`` (module docstring)."""
        if self.lr == "auto":
            return self.lr_scale / (1.0 / r**2 + L_y)
        frac = 1.0 - i / max(self.steps - 1, 1)
        return float(self.lr) * (self.lr_min_ratio + (1.0 - self.lr_min_ratio) * frac)

    def exact_move(self, problem: Problem) -> bool:
        """Whether the second move is the exact Gaussian draw (``x0_move``; linear operator, Gaussian noise)."""
        ok = hasattr(problem.physics, "A_adjoint") and isinstance(problem.likelihood, GaussianLikelihood)
        if self.x0_move == "exact" and not ok:
            raise ValueError("x0_move='exact' needs a linear operator (A_adjoint) and Gaussian noise, got "
                             f"{type(problem.physics).__name__} with {type(problem.likelihood).__name__}: use 'langevin'")
        return ok if self.x0_move == "auto" else self.x0_move == "exact"

    def langevin(self, problem: Problem, x0_hat: Tensor, r: float, h: float, generator) -> Tensor:
        """``langevin_steps`` unadjusted Langevin steps on :math:`U` from :math:`\\hat x_0`."""
        x0 = x0_hat.clone()
        for _ in range(self.langevin_steps):
            g, _ = problem.nll_grad(x0)
            grad = (x0 - x0_hat) / r**2 + g
            x0 = x0 - h * grad + math.sqrt(2 * h) * randn(x0.shape, generator, x0.device, x0.dtype)
        return x0

    # the loop -------------------------------------------------------------------------------
    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        sig = self.sigmas.tolist()
        dt, dev = problem.dtype, problem.device
        exact = self.exact_move(problem)
        L_y = likelihood_curvature(problem) if self.lr == "auto" and not exact else 0.0
        s2 = None
        if self.r == "auto":
            from invdiff.diffusion.denoiser import gaussian_fit

            s2 = gaussian_fit(self.denoiser, problem.x_shape, sig[0], n=max(16, min(problem.n, 256)),
                              generator=generator, dtype=dt, device=dev)[1]
        elif not isinstance(self.r, str):
            s2 = float(self.r) ** 2
        trace: dict = {"step_size": [], "residual_norm": [], "curvature": L_y, "x0_move": "exact" if exact else "langevin"}
        first_var = max(0, self.steps - max(1, round(self.var_fraction * self.steps)))
        mean = m2 = None  # Welford moments of x0_hat over the last levels
        x = sig[0] * randn((problem.n, *problem.x_shape), generator, dev, dt)
        record(0, x)
        for i in progress_bar(range(self.steps), self.progress, desc="DAPS"):
            sigma = sig[i]
            x0_hat = self.check(self.ode_x0(x, sigma), i, trace=trace, what="ODE estimate")
            if i >= first_var:
                k = i - first_var + 1
                delta = x0_hat - (0 if mean is None else mean)
                mean = x0_hat.clone() if mean is None else mean + delta / k
                m2 = torch.zeros_like(x0_hat) if m2 is None else m2 + delta * (x0_hat - mean)
            r = self.r_t(sigma, s2)
            if exact:
                x0 = gaussian_draw_cg(problem, x0_hat, r**2, self.cg_iters, generator, self.cg_tol)
            else:
                h = self.step_size(i, r, L_y)
                x0 = self.langevin(problem, x0_hat, r, h, generator)
                trace["step_size"].append(h)
            x0 = self.check(x0, i, fallback=x0_hat, trace=trace)
            trace["residual_norm"].append((2 * problem.nll(x0).detach()).sqrt().cpu())
            x = x0 + sig[i + 1] * randn(x0.shape, generator, dev, dt) if sig[i + 1] > 0 else x0
            record(i + 1, x, last=i == self.steps - 1)
        trace["residual_norm"] = problem.fold(torch.stack(trace["residual_norm"], 1)).movedim(2, 0)
        if m2 is not None:
            trace["x0_var"] = problem.fold((m2 / max(self.steps - first_var, 1)).detach())
        return PosteriorSamples(problem.fold(x.detach()), None, nfe=self.denoiser.nfe, trace=trace)
