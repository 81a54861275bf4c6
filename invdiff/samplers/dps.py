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
from typing import Literal

import torch
from torch import Tensor

from invdiff.samplers.registry import register
from invdiff.samplers.base import PosteriorSamples, Problem, Recorder, Sampler, check_sigmas
from invdiff.utils.progress import progress as progress_bar
from invdiff.utils.random import randn

__all__ = ["DPS", "dps_guidance"]

Guidance = Literal["norm", "squared"]


def dps_guidance(denoiser, x: Tensor, sigma: float | Tensor, problem: Problem, guidance: Guidance = "norm",
                 clip_x0: tuple[float, float] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One DPS vector-Jacobian product: ``(x0_hat, grad, residual_norm)``, all detached.

    .. math::
        g = \\nabla_x \\|y - \\mathcal A(D(x, \\sigma))\\|_\\Lambda \\quad\\text{or}\\quad
        g = \\nabla_x \\tfrac12 \\|r(D(x, \\sigma))\\|^2 ,

    per row of ``x`` (the sum over rows of per-row losses has per-row gradients). ``"norm"``
    uses the paper's norm: :math:`\\Lambda = I` for Gaussian noise (measurement units, no
    :math:`\\sigma_y`), :math:`\\Lambda_{jj} = 1/(2 y_j)` in photon counts for Poisson noise;
    ``"squared"`` the whitened residual :math:`r` (the Gaussian negative log-likelihood).
    ``residual_norm`` is the norm that was differentiated. The norm is floored at the float's
    tiny so that a zero residual gives a zero gradient, not NaN. ``sigma`` is a float or a
    ``(B,)`` tensor (passed to the denoiser as is).
    """
    x0_hat, grad, sq = _guidance(denoiser, x, sigma, problem, guidance, clip_x0)
    return x0_hat, grad, sq.sqrt()


def _guidance(denoiser, x: Tensor, sigma, problem: Problem, guidance: Guidance,
              clip_x0: tuple[float, float] | None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`dps_guidance` with the squared residual norm ``sq`` (per row) in place of its root,
    so that the sampler takes the root once over the whole trace instead of once per step.

    The loss depends on ``x`` only through the residual ``r``, and its gradient in ``r`` is in
    closed form, :math:`\\partial \\|r\\| / \\partial r = r / \\|r\\|` (zero where the norm is
    below the floor) and :math:`\\partial \\tfrac12\\|r\\|^2 / \\partial r = r`, so autograd runs
    only through the operator and the denoiser (one vector-Jacobian product with that cotangent),
    not through the norm. The cotangent is computed with the same floating-point operations as
    autograd's backward of the norm, so the gradient is the same to the last bit.
    """
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0_hat = denoiser(x_in, sigma)
        if clip_x0 is not None:
            x0_hat = x0_hat.clamp(*clip_x0)
        if guidance == "norm" and problem.likelihood == "gaussian":  # the paper's ||y - A x0||
            r = problem.y - problem.physics.A(x0_hat)
        elif guidance == "norm":  # ||y - A x0||_Lambda, Lambda = 1 / (2 y) in photon counts
            r = problem.whitened_residual(x0_hat) * 0.5**0.5
        else:
            r = problem.whitened_residual(x0_hat)
    r_d = r.detach()
    sq = r_d.pow(2).flatten(1).sum(1)
    if guidance == "norm":  # d ||r|| / dr = 2 r / (2 ||r||), the norm floored at tiny
        tiny = torch.finfo(sq.dtype).tiny
        w = torch.where(sq >= tiny, 1.0 / (2 * sq.clamp_min(tiny).sqrt()), 0.0)
        cotangent = w.reshape(-1, *([1] * (r_d.ndim - 1))) * (2 * r_d)
    else:  # d ||r||^2 / 2 / dr = r
        cotangent = r_d
    (grad,) = torch.autograd.grad(r, x_in, grad_outputs=cotangent)
    return x0_hat.detach(), grad, sq


@register("dps", "DPS (Chung et al. 2023): guided reverse diffusion, one VJP per step")
class DPS(Sampler):
    """Diffusion Posterior Sampling (Chung et al. 2023) on any of invdiff's step solvers.

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: number of noise levels (denoiser calls per sample for one-evaluation solvers).
    :param zeta: guidance step size (see the module docstring for its scaling).
    :param guidance: ``"norm"`` (the paper's rule) or ``"squared"``.
    :param step_scaling: ``"vp"`` (the paper's step in VP coordinates, see above) or ``"ve"``.
    :param method: unconditional step from :func:`invdiff.diffusion.solvers.make_solver`:
        ``"ddpm"`` (ancestral, as in the paper), ``"ddim"``, ``"dpmpp_2m"``, ``"euler"``.
    :param sigmas: descending noise levels ending at 0 (``steps + 1`` values); default
        :func:`default_sigmas` (the paper's DDPM linear schedule, in VE sigmas).
    :param clip_x0: clamp :math:`\\hat x_0` to this range (the reference code clips to [-1, 1]).
    :param solver_options: extra keyword arguments of ``make_solver``.
    :param progress: tqdm bar over the steps.
    :param on_nan: ``"raise"`` or ``"clip"`` (skip the non-finite part of a step).
    """

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
        progress: bool = True,
        on_nan: str = "raise",
    ) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        if sigmas is None:
            if not isinstance(steps, int) or steps < 1:
                raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        else:
            sigmas = check_sigmas(sigmas)
            steps = len(sigmas) - 1
        if not (isinstance(zeta, (int, float)) and zeta >= 0):
            raise ValueError(f"zeta: expected a float >= 0, got {zeta!r}")
        if guidance not in ("norm", "squared"):
            raise ValueError(f"guidance: expected 'norm' or 'squared', got {guidance!r}")
        if step_scaling not in ("vp", "ve"):
            raise ValueError(f"step_scaling: expected 'vp' or 've', got {step_scaling!r}")
        if clip_x0 is not None and not (len(clip_x0) == 2 and clip_x0[0] < clip_x0[1]):
            raise ValueError(f"clip_x0: expected (low, high) with low < high, got {clip_x0!r}")
        self.steps, self.zeta, self.guidance, self.method = steps, float(zeta), guidance, method
        self.sigmas, self.clip_x0, self.step_scaling = sigmas, clip_x0, step_scaling
        self.solver_options = dict(solver_options or {})
        from invdiff.diffusion.solvers import make_solver

        make_solver(method, self._sigmas(torch.float64, "cpu"), **self.solver_options)  # fail early

    def _sigmas(self, dtype, device) -> Tensor:
        s = default_sigmas(self.steps) if self.sigmas is None else self.sigmas
        return s.to(dtype=dtype, device=device)

    def zeta_i(self, sigma: float, sigma_next: float) -> float:
        """The guidance step from ``sigma`` to ``sigma_next`` in VE variables (see the module doc)."""
        if self.step_scaling == "ve":
            return self.zeta
        return self.zeta * math.sqrt((1.0 + sigma**2) * (1.0 + sigma_next**2))

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        from invdiff.diffusion.solvers import make_solver

        sigmas = self._sigmas(problem.dtype, problem.device)
        solver = make_solver(self.method, sigmas, **self.solver_options)
        D = self.denoiser
        trace: dict = {}

        def denoise(x: Tensor, sigma) -> Tensor:  # extra evaluations of multi-stage solvers
            with torch.no_grad():
                return D(x, sigma)

        # everything that does not depend on x is set up once, outside the loop
        n_steps = len(sigmas) - 1
        sig = sigmas.tolist()  # python floats: no device sync inside the loop
        zetas = [self.zeta_i(sig[i], sig[i + 1]) for i in range(n_steps)]
        # D's sigma argument as the (n,) tensor that CountingDenoiser would build at every call
        sigma_rows = sigmas[:-1, None].expand(n_steps, problem.n).contiguous()
        squares: list[Tensor] = []  # squared residual norms; one square root at the end
        x = sig[0] * randn((problem.n, *problem.x_shape), generator, problem.device, problem.dtype)
        record(0, x)
        for i in progress_bar(range(n_steps), self.progress, desc="DPS"):
            # 1. Tweedie estimate and the gradient of the residual through the denoiser
            x0_hat, grad, sq = _guidance(D, x, sigma_rows[i], problem, self.guidance, self.clip_x0)
            # 2. unconditional step sigma_i -> sigma_{i+1}
            x_prime = solver.step(i, x, x0_hat, denoise=denoise, generator=generator)
            # 3. guidance step
            x_next = x_prime - zetas[i] * grad
            x = self.check(x_next, i, fallback=x_prime, trace=trace)
            squares.append(sq)  # stays on the device: no sync per step
            record(i + 1, x, last=i == n_steps - 1)
        trace["residual_norm"] = problem.fold(torch.stack(squares, 1).sqrt()).movedim(2, 0).cpu()
        return PosteriorSamples(problem.fold(x.detach()), None, nfe=D.nfe, trace=trace)


def default_sigmas(steps: int) -> Tensor:
    """The DPS paper's noise levels: ``steps`` levels of the discrete DDPM linear schedule
    (betas 1e-4 to 0.02 over T = 1000, :func:`invdiff.diffusion.schedules.ddpm_sigmas`) as VE
    sigmas (157.4 down to 0.01), then 0; ``steps = 1000`` is the paper's setting."""
    from invdiff.diffusion.schedules import ddpm_sigmas

    return ddpm_sigmas(steps)
