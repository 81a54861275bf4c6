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
    x &\leftarrow \mathrm{CG}_M\big(A^\top A + \rho D_z^\top D_z,\; A^\top y + \rho D_z^\top (z - u);\; \hat x_0\big), \\
    z &\leftarrow \mathcal S_{\lambda/\rho}(D_z x + u), \qquad u \leftarrow u + D_z x - z, \\
    x_{i+1} &= x + \sigma_{down}\,\hat\varepsilon + \sigma_{up}\,\xi
        \qquad (\text{DDIM}(\eta),\ \hat\varepsilon = (x_i - \hat x_0)/\sigma_i),

with :math:`z, u` kept from one noise level to the next (warm start; initialised at
:math:`z = D_z \hat x_0`, :math:`u = 0` on the first step). ``tv_axes=(2, 3, 4)`` is the
all-axes variant. The paper applies the ADMM step to the noisy iterate of a 2000-step
predictor-corrector VE sampler; here, as in DDS, it corrects the Tweedie estimate and DDIM
re-noises it, which needs far fewer steps (the paper's own follow-up, DDS, Chung, Lee & Ye 2024).

Defaults :math:`\lambda = 0.04`, :math:`\rho = 10` are the paper's; its data term is the
unwhitened :math:`\tfrac12\|Ax - y\|^2` on volumes in [0, 1]; invdiff's CT and MRI operators
have :math:`\|A\| = 1`, so :math:`\lambda` is a TV weight per unit intensity (see
:mod:`invdiff.samplers.admm_tv` and ``docs/benchmarks/mbir3d.md`` for the values tuned here).

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
    :param axis, chunk: slice axis and slices per network call of the slice-wise prior.
    :param sigmas: explicit descending noise levels ending at 0.
    :param progress: tqdm bar. :param on_nan: ``"raise"`` or ``"clip"``.
    """

    label = "DiffusionMBIR"

    def __init__(self, prior, steps: int = 100, *, lam: float = 0.04, rho: float = 10.0, tv_axes=(2,),
                 cg_iters: int = 5, admm_iters: int = 1, eta: float = 0.15, axis: int = 2, chunk: int = 64,
                 sigmas: Tensor | None = None, progress: bool = True, on_nan: str = "raise") -> None:
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
        tv_axes = tuple(int(a) for a in tv_axes)
        if not tv_axes or any(a not in (2, 3, 4) for a in tv_axes):
            raise ValueError(f"tv_axes: expected spatial axes among (2, 3, 4) of (B, C, D, H, W), got {tv_axes}")
        self.lam, self.rho, self.tv_axes = float(lam), float(rho), tv_axes
        self.cg_iters, self.admm_iters, self.eta = cg_iters, admm_iters, float(eta)
        super().__init__(slicewise(prior, axis, chunk), steps, sigmas=sigmas, method="ddim",
                         solver_options={"eta": float(eta)}, progress=progress, on_nan=on_nan)

    def start(self, problem, sigmas, generator):
        if len(problem.x_shape) != 4:
            raise ValueError(f"DiffusionMBIR: expected volumes (C, D, H, W), the operator's signals have shape "
                             f"{problem.x_shape}")
        state = super().start(problem, sigmas, generator)
        state["admm"] = TVADMM(problem.physics, problem.y, self.lam, self.rho, self.tv_axes, self.cg_iters)
        return state

    def correct(self, x0_hat, problem, i, state):
        admm = state["admm"]
        if "z" not in state:
            state["z"], state["u"] = admm.init(x0_hat)
        x, z, u = x0_hat, state["z"], state["u"]
        for _ in range(self.admm_iters):
            x, z, u = admm.step(x, z, u)
        state["z"], state["u"] = z, u
        return x
