r"""Decomposed Diffusion Sampler (DDS), Chung, Lee & Ye, ICLR 2024.

The shared loop (:mod:`invdiff.samplers.loop`) with a conjugate-gradient hook: at each noise
level the Tweedie estimate is moved by a few CG steps towards the measurements inside the
Krylov subspace around it (no gradient through the network), then re-noised by DDIM with
:math:`\eta` and the network's noise estimate:

.. math::
    \hat x_0 &= D(x_i, \sigma_i), \\
    \hat x_0' &= \mathrm{CG}_M\big(A^\top V^{-1} A + v_i^{-1} I,\; A^\top V^{-1} y + v_i^{-1} \hat x_0;\; \hat x_0\big), \\
    x_{i+1} &= \hat x_0' + \sigma_{down}\, \hat\varepsilon + \sigma_{up} z, \qquad
        \hat\varepsilon = (x_i - \hat x_0) / \sigma_i

(:func:`invdiff.samplers.consistency.data_consistency_cg`; :math:`\sigma_{down}, \sigma_{up}` of
DDIM(:math:`\eta`), :func:`invdiff.diffusion.solvers.ancestral_sigmas`). The proximal weight
:math:`v_i` is the variance of :math:`x_0` given :math:`x_i` under a Gaussian data model of the
prior's scale :math:`s` (``prior.sigma_data`` when the prior has one, else 0.5),
:math:`v_i = s^2 \sigma_i^2 / (s^2 + \sigma_i^2)` (``lam="auto"``): large noise levels trust the
data, small ones the prior. ``lam=0`` is the paper's plain Krylov step
(:math:`v = \infty`, early stopping as the regulariser).

Cost per step: one denoiser call and ``cg_iters`` applications of :math:`A^\top A`; no
vector-Jacobian product through the network. About 50 steps suffice (the paper's setting), and
more do not help: the DDIM step carries the whole correction :math:`\hat x_0' - \hat x_0` into
:math:`x_{i+1}`, so every step adds ``cg_iters`` more CG steps towards the data, and past about 100
steps the iterate fits the measurement noise (the Krylov early stopping that regularises DDS runs
out). On the demo's CT task the data residual of the mean falls from 0.93 to 0.61 times the noise
level from 50 to 1000 steps, and PSNR by several dB; on an exact Gaussian-mixture prior the error
of the mean against the exact posterior mean grows from 4.5% at 50 steps to 13% at 1000
(``python -m invdiff.benchmarks.dds_steps``, ``docs/benchmarks/dds-steps.md``).

``x0_noise=True`` (calibrated spread): the step above uses the *mean* of the Gaussian
approximation :math:`\mathcal N(m_i, P_i^{-1})`, :math:`P_i = A^\top V^{-1} A + v_i^{-1} I`, of
:math:`p(x_0 \mid x_i, y)`, so the spread of the draws misses :math:`\mathrm{Var}[x_0 \mid x_i, y]`
(under-dispersed: 0.76 per-pixel 90% coverage in SBC on 16 x 16 CT, ``invdiff bench calibration``).
With the option, one more CG solve draws :math:`\tilde x_0 \sim \mathcal N(m_i, P_i^{-1})` by
perturb-and-MAP (the same system with :math:`y + V^{1/2}\xi_1` and :math:`\hat x_0 + \sqrt{v_i}\,\xi_2`,
started at the latter), and the step uses :math:`m_i + w_i (\tilde x_0 - m_i)`,
:math:`w_i = 1 - \sigma_{down}/\sigma_i` the weight of :math:`x_0` in the DDIM mean: the ancestral
kernel averaged over :math:`x_0 \mid x_i, y` then has the variance :math:`\sigma_{up}^2 + w_i^2 P_i^{-1}`
(as Analytic-DPM, Bao et al. 2022, adds :math:`w_i^2\,\mathrm{Var}[x_0 \mid x_i]` without data).
Cost: twice the CG steps; the network calls are unchanged.

Example: a noiseless 1-of-3 observation of a 3-d standard Gaussian (the posterior mean is y on
the observed coordinate, 0 elsewhere)

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> A = torch.tensor([[0.0, 1.0, 0.0]])
>>> dds = DDS(Gaussian(torch.zeros(3), 1.0), steps=10, progress=False)
>>> dds.sample(torch.full((1, 1), 0.5), Matrix(A, sigma=0.01), n_samples=3).samples.shape
torch.Size([3, 1, 3])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.diffusion.solvers import ancestral_sigmas
from invdiff.samplers.consistency import data_consistency_cg, gaussian_draw_cg
from invdiff.samplers.loop import DiffusionLoop
from invdiff.samplers.registry import register

__all__ = ["DDS"]


@register("dds", "DDS (Chung, Lee & Ye 2024): conjugate-gradient data consistency on x0, DDIM re-noising, no VJP")
class DDS(DiffusionLoop):
    """Decomposed Diffusion Sampler on the shared loop.

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: noise levels (Karras levels over [0.002, 80], then 0).
    :param cg_iters: conjugate-gradient steps per noise level (``M`` of the paper; default 2).
    :param eta: DDIM noise (0: deterministic; 1: DDPM, the default; see ``docs/benchmarks/samplers-fast.md``
        for the measured choice).
    :param lam: ``"auto"`` (the prior-variance weight of the module docstring), ``0`` (plain
        Krylov step), or a float :math:`\\lambda` giving :math:`v_i = 1/\\lambda` at every step.
    :param sigmas: explicit descending noise levels ending at 0 (default: Karras levels over
        ``[sigma_min, sigma_max]``, then 0).
    :param x0_noise: draw :math:`x_0` from the Gaussian approximation of :math:`p(x_0 \\mid x_i, y)`
        (perturb-and-MAP) and weight its spread as the ancestral kernel does (module docstring);
        needs ``eta > 0`` and ``lam="auto"`` or a float > 0.
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    label = "DDS"

    def __init__(self, prior, steps: int = 50, *, cg_iters: int = 2, eta: float = 1.0, lam: float | str = "auto",
                 sigmas: Tensor | None = None, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 x0_noise: bool = False, progress: bool = True, on_nan: str = "raise") -> None:
        if not isinstance(x0_noise, bool):
            raise ValueError(f"x0_noise: expected True or False, got {x0_noise!r}")
        if x0_noise and (eta == 0 or lam == 0):
            raise ValueError(f"x0_noise=True needs eta > 0 and lam != 0 (a proper Gaussian x0 | x), got eta={eta!r}, lam={lam!r}")
        self.x0_noise = x0_noise
        if not isinstance(cg_iters, int) or isinstance(cg_iters, bool) or cg_iters < 1:
            raise ValueError(f"cg_iters: expected an int >= 1, got {cg_iters!r}")
        if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
            raise ValueError(f"eta: expected a number in [0, 1], got {eta!r}")
        if not (lam == "auto" or (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0)):
            raise ValueError(f"lam: expected 'auto' or a finite number >= 0, got {lam!r}")
        self.cg_iters, self.eta, self.lam = cg_iters, float(eta), lam
        super().__init__(prior, steps, sigmas=sigmas, method="ddim", solver_options={"eta": float(eta)},
                         progress=progress, on_nan=on_nan, sigma_min=sigma_min, sigma_max=sigma_max)

    def prox_variance(self, sigma: float) -> float:
        """:math:`v_i` of the module docstring at noise level ``sigma``."""
        if self.lam == "auto":
            s2 = float(getattr(self.prior, "sigma_data", 0.5)) ** 2
            return s2 * sigma**2 / (s2 + sigma**2)
        return math.inf if self.lam == 0 else 1.0 / float(self.lam)

    def start(self, problem, sigmas, generator):
        state = super().start(problem, sigmas, generator)
        levels = sigmas.tolist()
        state["v"] = [self.prox_variance(s) for s in levels[:-1]]
        if self.x0_noise:  # w_i: the weight of x0 in the DDIM(eta) mean from sigma_i to sigma_{i+1}
            state["w"] = [1.0 - ancestral_sigmas(s, s1, self.eta)[0] / s for s, s1 in zip(levels[:-1], levels[1:])]
            state["generator"] = generator
        return state

    def correct(self, x0_hat, problem, i, state):
        mean = data_consistency_cg(problem, x0_hat, self.cg_iters, state["v"][i])
        if not self.x0_noise:
            return mean
        return mean + state["w"][i] * (self._draw(problem, x0_hat, state["v"][i], state["generator"]) - mean)

    def _draw(self, problem, x0_hat: Tensor, v: float, generator) -> Tensor:
        """Perturb-and-MAP draw from :math:`\\mathcal N(m, P^{-1})` (module docstring), ``cg_iters`` CG steps."""
        return gaussian_draw_cg(problem, x0_hat, v, self.cg_iters, generator)
