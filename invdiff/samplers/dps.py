"""Diffusion Posterior Sampling (DPS), Chung et al., ICLR 2023.

At each noise level the unconditional reverse step is taken from the Tweedie estimate
:math:`\\hat x_0 = D(x_i, \\sigma_i)`, then the iterate is pushed down the gradient of the
residual of :math:`\\hat x_0` (Algorithm 1 of the paper, written in VE variables):

.. math::
    \\hat x_0 &= D(x_i, \\sigma_i), \\\\
    x'_{i+1} &= \\mathrm{step}(x_i, \\hat x_0; \\sigma_i \\to \\sigma_{i+1})
        \\quad\\text{(DDPM, DDIM, DPM-Solver++ 2M, Euler)}, \\\\
    x_{i+1} &= x'_{i+1} - \\zeta_i \\, \\nabla_{x_i} \\| y - \\mathcal A(\\hat x_0(x_i)) \\|_\\Lambda
        \\quad\\text{(``guidance="norm"``, the paper's rule)}, \\\\
    x_{i+1} &= x'_{i+1} - \\zeta_i \\, \\nabla_{x_i} \\tfrac12 \\| r(\\hat x_0(x_i)) \\|^2
        \\quad\\text{(``guidance="squared"``)},

with :math:`\\Lambda = I` for Gaussian noise and :math:`\\Lambda_{jj} = 1/(2 y_j)` (photon
counts) for Poisson noise (the paper's eq. 16), and the whitened residual
:math:`r = (y - \\mathcal A(\\hat x_0)) / \\sqrt{\\mathrm{Var}\\, y}` (:math:`\\sigma_y^2` for
Gaussian noise, :math:`g\\, y` for Poisson noise of gain :math:`g`), so that
:math:`\\tfrac12\\|r\\|^2` is the negative log-likelihood at :math:`\\hat x_0`.

Step size. The paper writes :math:`\\zeta' / \\|y - \\mathcal A(\\hat x_0)\\|` times the
gradient of the squared norm; the reference code steps ``scale`` times the gradient of the
non-squared norm, so ``zeta = scale = 2 zeta'``. The paper works with VP iterates
:math:`x^{vp} = \\alpha x` (:math:`\\alpha = 1/\\sqrt{1 + \\sigma^2}`); its update
:math:`x^{vp}_{i+1} = x'^{vp}_{i+1} - \\zeta \\nabla_{x^{vp}_i}\\|\\cdot\\|` is, in our VE variables,

.. math:: \\zeta_i = \\frac{\\zeta}{\\alpha_i \\alpha_{i+1}} = \\zeta \\sqrt{(1 + \\sigma_i^2)(1 + \\sigma_{i+1}^2)}
    \\qquad (``step\\_scaling="vp"``, the default),

so the paper's ``zeta`` values carry over; ``step_scaling="ve"`` uses :math:`\\zeta_i = \\zeta`.
Those values (0.3 for SR x4 and Gaussian deblur, 0.5 for inpainting, 1.0 for phase retrieval)
hold for 1000 DDPM steps, images in [-1, 1] and noise 0.05. Retune them when any of these
changes: for N steps start from ``zeta * 1000 / N`` (the same guidance summed over the
trajectory); for data in [0, 1], halve it (the norm gradient moves :math:`x` by about ``zeta``
in data units). With ``guidance="squared"`` the step is ``zeta`` times the gradient of the
log-likelihood at :math:`\\hat x_0`, so it scales as :math:`1/\\sigma_y^2`; ``zeta`` of order
:math:`\\sigma_y^2 / \\|A\\|^2` keeps a step of gradient descent on it stable.
For Poisson noise of gain :math:`g` the paper's norm is in photon counts (:math:`1/g` per unit
of :math:`y`), so its gradient is about :math:`1/\\sqrt{2g}` times larger: scale ``zeta`` by
:math:`\\sqrt{2g}`.

Samples are independent: the residual norm is taken per sample (never summed over the batch
before the square root), and ``n_samples`` draws cost one batched denoiser call per step. Each
step makes one vector-Jacobian product through the denoiser and frees its graph.

Example
-------
>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> prior = Gaussian(torch.zeros(2), 1.0)
>>> physics = Matrix(torch.eye(2)[:1], sigma=0.1)
>>> out = DPS(prior, steps=20, progress=False).sample(torch.ones(1, 1), physics, n_samples=4,
...                                                 generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.nfe
(torch.Size([4, 1, 2]), 20)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.samplers.base import PosteriorSamples, Problem
from invdiff.samplers.guidance import Guidance, guided_grad
from invdiff.samplers.loop import DiffusionLoop
from invdiff.samplers.registry import register

__all__ = ["DPS", "dps_guidance", "default_sigmas"]


def dps_guidance(denoiser, x: Tensor, sigma: float | Tensor, problem: Problem, guidance: Guidance = "norm",
                 clip_x0: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One DPS vector-Jacobian product: ``(x0_hat, grad, residual_norm)``, all detached
    (:func:`invdiff.samplers.guidance.guided_grad` with the norm instead of its square)."""
    x0_hat, grad, sq = guided_grad(denoiser, x, sigma, problem, guidance, clip_x0)
    return x0_hat, grad, sq.sqrt()


@register("dps", "DPS (Chung et al. 2023): guided reverse diffusion, one VJP per step")
class DPS(DiffusionLoop):
    """Diffusion Posterior Sampling (Chung et al. 2023) on any of invdiff's step solvers.

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: number of noise levels (denoiser calls per sample for one-evaluation solvers).
    :param zeta: guidance step size (see the module docstring for its scaling).
    :param guidance: ``"norm"`` (the paper's rule) or ``"squared"``.
    :param step_scaling: ``"vp"`` (the paper's step in VP coordinates, see above) or ``"ve"``.
    :param method: unconditional step from :func:`invdiff.diffusion.solvers.make_solver`:
        ``"ddpm"`` (ancestral, as in the paper), ``"ddim"``, ``"dpmpp_2m"``, ``"euler"``.
    :param sigmas: descending noise levels ending at 0 (``steps + 1`` values); default
        ``schedule``: ``"ddpm"`` (the paper's DDPM linear schedule in VE sigmas,
        :func:`default_sigmas`) or ``"karras"`` over ``[sigma_min, sigma_max]``.
    :param clip_x0: clamp :math:`\\hat x_0` to this range (the reference code clips to [-1, 1]).
    :param solver_options: extra keyword arguments of ``make_solver``.
    :param progress: tqdm bar over the steps.
    :param on_nan: ``"raise"`` or ``"clip"`` (skip the non-finite part of a step).
    """

    label = "DPS"

    def __init__(
        self,
        prior,
        steps: int = 200,
        *,
        zeta: float = 1.0,
        guidance: Guidance = "norm",
        step_scaling: str = "vp",
        method: str = "ddpm",
        sigmas: Tensor | None = None,
        clip_x0: tuple[float, float] | None = None,
        solver_options: dict | None = None,
        schedule: str = "ddpm",
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        progress: bool = True,
        on_nan: str = "raise",
    ) -> None:
        if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and zeta >= 0):
            raise ValueError(f"zeta: expected a finite float >= 0, got {zeta!r}")
        if guidance not in ("norm", "squared"):
            raise ValueError(f"guidance: expected 'norm' or 'squared', got {guidance!r}")
        if step_scaling not in ("vp", "ve"):
            raise ValueError(f"step_scaling: expected 'vp' or 've', got {step_scaling!r}")
        if clip_x0 is not None and not (len(clip_x0) == 2 and clip_x0[0] < clip_x0[1]):
            raise ValueError(f"clip_x0: expected (low, high) with low < high, got {clip_x0!r}")
        self.zeta, self.guidance, self.clip_x0, self.step_scaling = float(zeta), guidance, clip_x0, step_scaling
        super().__init__(prior, steps, sigmas=sigmas, method=method, solver_options=solver_options,
                         progress=progress, on_nan=on_nan, schedule=schedule, sigma_min=sigma_min,
                         sigma_max=sigma_max)

    def zeta_i(self, sigma: float, sigma_next: float) -> float:
        """The guidance step from ``sigma`` to ``sigma_next`` in VE variables (see the module doc)."""
        if self.step_scaling == "ve":
            return self.zeta
        return self.zeta * math.sqrt((1.0 + sigma**2) * (1.0 + sigma_next**2))

    def start(self, problem, sigmas, generator):
        state = super().start(problem, sigmas, generator)
        sig = sigmas.tolist()  # python floats: no device sync inside the loop
        state["zetas"] = [self.zeta_i(sig[i], sig[i + 1]) for i in range(len(sig) - 1)]
        state["squares"] = []  # squared residual norms; one square root at the end
        return state

    def estimate(self, x, i, problem, state):
        # the Tweedie estimate and the gradient of the residual's norm through the denoiser
        x0_hat, grad, sq = guided_grad(self.denoiser, x, state["sigma_rows"][i], problem, self.guidance, self.clip_x0)
        state["squares"].append(sq)  # stays on the device: no sync per step
        return x0_hat, state["zetas"][i] * grad

    def finish(self, problem, x, state) -> PosteriorSamples:
        state["trace"]["residual_norm"] = problem.fold(torch.stack(state["squares"], 1).sqrt()).movedim(2, 0).cpu()
        return super().finish(problem, x, state)


def default_sigmas(steps: int) -> Tensor:
    """The DPS paper's noise levels: ``steps`` levels of the discrete DDPM linear schedule
    (betas 1e-4 to 0.02 over T = 1000, :func:`invdiff.diffusion.schedules.ddpm_sigmas`) as VE
    sigmas (157.4 down to 0.01), then 0; ``steps = 1000`` is the paper's setting."""
    from invdiff.diffusion.schedules import ddpm_sigmas

    return ddpm_sigmas(steps)
