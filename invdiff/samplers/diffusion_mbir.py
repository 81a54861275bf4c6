r"""DiffusionMBIR: 3D inverse problems with a 2D diffusion prior and a TV term across slices
(Chung, Ryu, McCann, Bresler & Ye, "Solving 3D Inverse Problems using Pre-trained 2D Diffusion
Models", CVPR 2023).

The shared loop (:mod:`invdiff.samplers.loop`) with the 2D prior applied to every slice
(:class:`invdiff.diffusion.slicewise.SliceWisePrior`) and an ADMM hook
(:class:`invdiff.samplers.admm_tv.TVADMM`) for the model-based problem

.. math::
    \min_x \tfrac12 \|A x - y\|_2^2 + \lambda \|D_z x\|_1 .

At each noise level :math:`\sigma_i`:

.. math::
    \hat x_0 &= D_{2D}(x_i, \sigma_i) \ \text{on every slice}, \\
    x &\leftarrow \mathrm{CG}_M\big(A^\top W A + p_i I + \rho D_z^\top D_z,\;
        A^\top W y + p_i \hat x_0 + \rho D_z^\top (z - u);\; \hat x_0\big), \\
    z &\leftarrow \mathcal S_{\lambda/\rho}(D_z x + u), \qquad u \leftarrow u + D_z x - z, \\
    x_{i+1} &= x + \sigma_{down}\,\hat\varepsilon + \sigma_{up}\,\xi
        \qquad (\text{DDIM}(\eta),\ \hat\varepsilon = (x_i - \hat x_0)/\sigma_i),

i.e. one ADMM iteration on
:math:`\tfrac12\|Ax - y\|_W^2 + \tfrac{p_i}{2}\|x - \hat x_0\|^2 + \lambda\|D_z x\|_1`, with :math:`z, u`
kept from one noise level to the next (warm start; :math:`z = D_z \hat x_0`, :math:`u = 0` on the
first step). ``tv_axes=(2, 3, 4)`` is the all-axes variant.

Units. :math:`W = \bar v / \mathrm{Var}\,y` (the likelihood's variance relative to its mean
:math:`\bar v`; :math:`W = I` for Gaussian noise), so the data term is the paper's unweighted
:math:`\tfrac12\|Ax - y\|^2` and :math:`\lambda, \rho` keep the paper's units: a TV weight per unit
intensity for volumes in [0, 1] and :math:`\|A\| = 1` (invdiff's CT and MRI operators). The
paper's :math:`\lambda = 0.04, \rho = 10` were set for its own Radon scaling and AAPM volumes; with
invdiff's normalised operators they give 18.9 dB on an 8-view CT volume where DDS slice by slice
gives 31.7 dB, so the defaults are :math:`\lambda = 0.001, \rho = 0.03` and 50 steps, tuned on a
validation volume (``docs/benchmarks/mbir3d.md``; 28.8 dB on that check). ``prox="auto"`` adds DDS's proximal term with
:math:`p_i = \bar v / v_i`, :math:`v_i = s^2\sigma_i^2/(s^2 + \sigma_i^2)` (:mod:`invdiff.samplers.dds`):
``DiffusionMBIR(lam=0)`` is then DDS on the slice-wise prior, and DiffusionMBIR is "DDS with the
z-TV term" of Chung, Lee & Ye (2024). ``prox=0`` is the paper's plain CG from :math:`\hat x_0`.

Differences from the paper: it applies the ADMM step to the noisy iterate of a 2000-step
predictor-corrector VE sampler; here, as in DDS, it corrects the Tweedie estimate and DDIM
re-noises it, which needs far fewer steps.

Cost per step: one slice-wise denoiser call (``depth`` 2D evaluations per volume) and
``cg_iters * admm_iters`` applications of :math:`A^\top A`; no gradient through the network.

Example
-------
>>> import torch
>>> from invdiff.operators.volume3d import SliceMaskMRI
>>> prior2d = lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)    # N(0, I) per slice
>>> op = SliceMaskMRI(torch.ones(4, 8, 8), sigma=0.05)
>>> out = DiffusionMBIR(prior2d, steps=5, progress=False).sample(torch.zeros(1, 2, 4, 8, 8), op,
...                                                              generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.nfe
(torch.Size([1, 1, 2, 4, 8, 8]), 5)
"""
from __future__ import annotations

import math

from torch import Tensor

from invdiff.diffusion.slicewise import SliceWisePrior
from invdiff.samplers.admm_tv import TVADMM
from invdiff.samplers.loop import DiffusionLoop
from invdiff.samplers.registry import register

__all__ = ["DiffusionMBIR", "slicewise"]


def slicewise(prior, axis: int = 2, chunk: int = 64) -> SliceWisePrior:
    """``prior`` as a volume denoiser: returned as is if it already is a :class:`SliceWisePrior`."""
    return prior if isinstance(prior, SliceWisePrior) else SliceWisePrior(prior, axis=axis, chunk=chunk)


@register("diffusion-mbir", "DiffusionMBIR (Chung et al. 2023): 2D prior per slice + ADMM for z-TV data consistency")
class DiffusionMBIR(DiffusionLoop):
    """DiffusionMBIR on the shared loop (module docstring).

    :param prior: a 2D denoiser ``D(x, sigma)`` (wrapped slice-wise along ``axis``), or a
        :class:`~invdiff.diffusion.slicewise.SliceWisePrior`.
    :param steps: noise levels (Karras levels over [0.002, 80], then 0).
    :param lam: :math:`\\lambda`, weight of :math:`\\|D x\\|_1` (``0``: no TV, ADMM is then plain CG).
    :param rho: ADMM penalty :math:`\\rho`.
    :param tv_axes: ``(2,)`` (z only, the paper's default) or ``(2, 3, 4)`` (all axes).
    :param cg_iters: CG steps per x-update. :param admm_iters: ADMM iterations per noise level.
    :param eta: DDIM noise (0 deterministic, 1 DDPM).
    :param prox: ``"auto"`` (DDS's proximal weight, module docstring) or a fixed :math:`p \\ge 0`
        (``0``: the paper's plain CG from :math:`\\hat x_0`).
    :param axis, chunk: slice axis and slices per network call of the slice-wise prior.
    :param sigmas: explicit descending noise levels ending at 0.
    :param schedule, sigma_min, sigma_max: the default noise levels (:class:`~invdiff.samplers.loop.DiffusionLoop`).
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    label = "DiffusionMBIR"

    def __init__(self, prior, steps: int = 50, *, lam: float = 0.001, rho: float = 0.03, tv_axes=(2,),
                 cg_iters: int = 5, admm_iters: int = 1, eta: float = 0.15, prox: str | float = "auto", order: str = "zx", axis: int = 2,
                 chunk: int = 64, sigmas: Tensor | None = None, schedule: str = "karras", sigma_min: float = 0.002,
                 sigma_max: float = 80.0, progress: bool = True, on_nan: str = "raise") -> None:
        for name, v in (("lam", lam), ("rho", rho)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if rho <= 0:
            raise ValueError(f"rho: expected > 0, got {rho!r}")
        for name, v in (("cg_iters", cg_iters), ("admm_iters", admm_iters)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not (isinstance(eta, (int, float)) and 0 <= eta <= 1):
            raise ValueError(f"eta: expected a number in [0, 1], got {eta!r}")
        if not (prox == "auto" or (isinstance(prox, (int, float)) and not isinstance(prox, bool)
                                   and math.isfinite(prox) and prox >= 0)):
            raise ValueError(f"prox: expected 'auto' or a finite number >= 0, got {prox!r}")
        tv_axes = tuple(int(a) for a in tv_axes)
        if not tv_axes or any(a not in (2, 3, 4) for a in tv_axes):
            raise ValueError(f"tv_axes: expected spatial axes among (2, 3, 4) of (B, C, D, H, W), got {tv_axes}")
        self.lam, self.rho, self.tv_axes = float(lam), float(rho), tv_axes
        if order not in ("zx", "xz"):
            raise ValueError(f"order: expected 'zx' or 'xz', got {order!r}")
        self.cg_iters, self.admm_iters, self.eta, self.prox, self.order = cg_iters, admm_iters, float(eta), prox, order
        super().__init__(slicewise(prior, axis, chunk), steps, sigmas=sigmas, method="ddim",
                         solver_options={"eta": float(eta)}, progress=progress, on_nan=on_nan,
                         schedule=schedule, sigma_min=sigma_min, sigma_max=sigma_max)

    def start(self, problem, sigmas, generator):
        if len(problem.x_shape) != 4:
            raise ValueError(f"DiffusionMBIR: expected volumes (C, D, H, W), the operator's signals have shape "
                             f"{problem.x_shape}")
        state = super().start(problem, sigmas, generator)
        y = problem.y
        var = problem.likelihood.variance(y).expand_as(y)
        s2 = var.flatten(1).mean(1).reshape(-1, *([1] * (y.ndim - 1)))  # the mean variance of each row
        state["admm"] = TVADMM(problem.physics, y, self.lam, self.rho, self.tv_axes, self.cg_iters, weight=s2 / var)
        s2x = s2.reshape(-1, *([1] * len(problem.x_shape)))
        if self.prox == "auto":
            sd2 = float(getattr(self.prior, "sigma_data", 0.5)) ** 2
            state["prox"] = [s2x * (sd2 + s**2) / (sd2 * s**2) for s in sigmas[:-1].tolist()]
        else:
            state["prox"] = [float(self.prox)] * (len(sigmas) - 1)
        return state

    def correct(self, x0_hat, problem, i, state):
        admm = state["admm"]
        if "z" not in state:
            state["z"], state["u"] = admm.init(x0_hat)
        x, z, u = x0_hat, state["z"], state["u"]
        for _ in range(self.admm_iters):
            if self.order == "zx":  # threshold the current estimate first, then fit the data
                z, u = admm.zu_update(x, z, u)
                x = admm.x_update(x, z, u, prox=state["prox"][i], x_ref=x0_hat)
            else:
                x, z, u = admm.step(x, z, u, prox=state["prox"][i], x_ref=x0_hat)
        state["z"], state["u"] = z, u
        return x
