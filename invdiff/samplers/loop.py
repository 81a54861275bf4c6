r"""The shared reverse-diffusion loop with a data-consistency hook.

Every sampler of the DPS / DDS / DiffPIR / DiffusionMBIR family is this loop plus a hook and
settings:

.. math::
    \hat x_0 &= D(x_i, \sigma_i, \text{cond}) &&\text{(``estimate``; guided samplers also return a pull)} \\
    \hat x_0' &= \mathrm{correct}(\hat x_0, \text{problem}, i) &&\text{(data consistency: prox, CG, ADMM; identity by default)} \\
    x_{i+1} &= \mathrm{step}_i(x_i, \hat x_0') - \text{pull} &&\text{(the solver's transition: DDPM, DDIM(}\eta\text{), DPM-Solver++ ...)}

When the hook moves :math:`\hat x_0`, the iterate moves with it
(:math:`x_i \leftarrow x_i + \hat x_0' - \hat x_0`), so the solver re-noises the corrected
estimate with the network's own noise estimate :math:`\hat\varepsilon = (x_i - \hat x_0)/\sigma_i`,
as DDS does (Chung, Lee & Ye 2024, eq. 14: :math:`x_{t-1} = \sqrt{\bar\alpha_{t-1}}\, \hat x_0' +
\ldots\, \hat\varepsilon_\theta(x_t)`). A subclass with ``renoise_corrected = True`` skips that
shift: the solver then re-noises :math:`\hat x_0'` with :math:`(x_i - \hat x_0')/\sigma_i`, so only
the fraction of the correction that the solver's step keeps reaches :math:`x_{i+1}` (step-count
invariant, but weaker per step: ``docs/benchmarks/dds-steps.md``).

A new sampler is a subclass that overrides :meth:`DiffusionLoop.correct` (and, for guidance
through the network, :meth:`DiffusionLoop.estimate`); see ``docs/architecture.md``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.hallucination import X0Variance
from invdiff.samplers.base import PosteriorSamples, Problem, Recorder, Sampler, resolve_sigmas
from invdiff.utils.progress import progress as progress_bar
from invdiff.utils.random import randn
from invdiff.utils.validate import check_divergence, data_range, divergence_bound

__all__ = ["DiffusionLoop", "SCHEDULES"]


def _karras(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    from invdiff.diffusion.schedules import karras_sigmas

    return karras_sigmas(steps, sigma_min, sigma_max)


def _ddpm(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    from invdiff.diffusion.schedules import ddpm_sigmas

    return ddpm_sigmas(steps)


#: noise-level schedules of the loop: name -> f(steps, sigma_min, sigma_max) (ending at 0)
SCHEDULES = {"karras": _karras, "ddpm": _ddpm}


class DiffusionLoop(Sampler):
    """Base of the samplers on the shared loop (module docstring).

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: number of noise levels (one denoiser call each for one-evaluation solvers).
    :param sigmas: explicit descending noise levels ending at 0 (``steps + 1`` values);
        default :meth:`default_sigmas`.
    :param method: the solver's transition (:func:`invdiff.diffusion.solvers.make_solver`).
    :param schedule: ``"karras"`` or ``"ddpm"`` (:meth:`default_sigmas`), used when ``sigmas`` is None.
    :param sigma_min, sigma_max: the range of the Karras levels.
    :param solver_options: extra keyword arguments of ``make_solver`` (e.g. ``eta``).
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    #: name shown on the progress bar
    label = "diffusion"
    #: ``trace["x0_var"]`` is the per-pixel variance of the (corrected) x0 estimate over this last
    #: fraction of the steps (:mod:`invdiff.hallucination`; no extra network call)
    x0_var_fraction = 0.25
    #: re-noise the corrected estimate with its own noise estimate instead of the network's (module docstring)
    renoise_corrected = False

    def __init__(self, prior, steps: int, *, sigmas: Tensor | None, method: str,
                 solver_options: dict | None, progress: bool, on_nan: str,
                 schedule: str = "karras", sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        self.steps, self.sigmas = resolve_sigmas(steps, sigmas)
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {schedule!r}")
        if not (0 < sigma_min < sigma_max < float("inf")):
            raise ValueError(f"sigma_min, sigma_max: expected 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.schedule, self.sigma_min, self.sigma_max = schedule, float(sigma_min), float(sigma_max)
        self.method = method
        self.solver_options = dict(solver_options or {})
        from invdiff.diffusion.solvers import make_solver

        make_solver(method, self._sigmas(torch.float64, "cpu"), **self.solver_options)  # fail early

    # settings -------------------------------------------------------------------------------
    def default_sigmas(self, steps: int) -> Tensor:
        """Noise levels when none are given, by ``schedule``: ``"karras"`` levels over
        ``[sigma_min, sigma_max]`` (EDM, rho = 7; default [0.002, 80], the shipped priors' training
        range), or ``"ddpm"``, the discrete DDPM linear schedule in VE sigmas (157.4 to 0.01); then 0."""
        return SCHEDULES[self.schedule](steps, self.sigma_min, self.sigma_max)

    def _sigmas(self, dtype, device) -> Tensor:
        s = self.default_sigmas(self.steps) if self.sigmas is None else self.sigmas
        return s.to(dtype=dtype, device=device)

    # the hooks ------------------------------------------------------------------------------
    def start(self, problem: Problem, sigmas: Tensor, generator) -> dict:
        """State of one run (``state["trace"]`` is returned to the user). Called before the loop."""
        return {"trace": {}, "sigma_rows": sigmas[:-1, None].expand(len(sigmas) - 1, problem.n).contiguous()}

    def estimate(self, x: Tensor, i: int, problem: Problem, state: dict) -> tuple[Tensor, Tensor | None]:
        """``(x0_hat, pull)``: the denoiser's estimate at step ``i``, and a vector subtracted
        from the solver's step (``None``: no guidance)."""
        with torch.no_grad():
            return self.denoiser(x, state["sigma_rows"][i]), None

    def correct(self, x0_hat: Tensor, problem: Problem, i: int, state: dict) -> Tensor:
        """The data-consistency hook: return a corrected ``x0_hat`` (identity here)."""
        return x0_hat

    def finish(self, problem: Problem, x: Tensor, state: dict) -> PosteriorSamples:
        return PosteriorSamples(problem.fold(x.detach()), None, nfe=self.denoiser.nfe, trace=state["trace"])

    # the loop -------------------------------------------------------------------------------
    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        from invdiff.diffusion.solvers import make_solver

        sigmas = self._sigmas(problem.dtype, problem.device)
        solver = make_solver(self.method, sigmas, **self.solver_options)
        D = self.denoiser

        def denoise(x: Tensor, sigma) -> Tensor:  # extra evaluations of multi-stage solvers
            with torch.no_grad():
                return D(x, sigma)

        state = self.start(problem, sigmas, generator)
        x0_var = X0Variance(len(sigmas) - 1, self.x0_var_fraction)
        # divergence by the iterate's scale against the prior's data range (when its card says it)
        bound = (lambda sigma: divergence_bound(self.prior, sigma)) if data_range(self.prior) is not None else None
        n_steps = len(sigmas) - 1
        x = float(sigmas[0]) * randn((problem.n, *problem.x_shape), generator, problem.device, problem.dtype)
        record(0, x)
        for i in progress_bar(range(n_steps), self.progress, desc=self.label):
            x0_hat, pull = self.estimate(x, i, problem, state)
            x0_corr = self.correct(x0_hat, problem, i, state)
            x0_var.update(i, x0_corr)
            if x0_corr is not x0_hat and not self.renoise_corrected:
                x = x + (x0_corr - x0_hat)  # keep the network's noise estimate (module docstring)
            x_prime = solver.step(i, x, x0_corr, denoise=denoise, generator=generator)
            x = self.check(x_prime if pull is None else x_prime - pull, i, fallback=x_prime, trace=state["trace"])
            if bound is not None and (i % 10 == 0 or i == n_steps - 1):  # one reduction every 10 steps
                check_divergence(x, None, i, bound(float(sigmas[i + 1])), name=self.label)
            record(i + 1, x, last=i == n_steps - 1)
        if x0_var.variance() is not None:
            state["trace"]["x0_var"] = problem.fold(x0_var.variance())
        return self.finish(problem, x, state)
