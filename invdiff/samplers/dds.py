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
vector-Jacobian product through the network. About 50 steps suffice (the paper's setting).

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

from torch import Tensor

from invdiff.samplers.consistency import data_consistency_cg
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
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    label = "DDS"

    def __init__(self, prior, steps: int = 50, *, cg_iters: int = 2, eta: float = 1.0, lam: float | str = "auto",
                 sigmas: Tensor | None = None, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 progress: bool = True, on_nan: str = "raise") -> None:
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
        state["v"] = [self.prox_variance(s) for s in sigmas[:-1].tolist()]
        return state

    def correct(self, x0_hat, problem, i, state):
        return data_consistency_cg(problem, x0_hat, self.cg_iters, state["v"][i])
