"""RED-Diff: variational diffusion regularisation (Mardani et al., ICLR 2024).

RED-Diff fits a variational distribution :math:`q(x_0 | y) = \\mathcal N(\\mu, \\sigma_q^2 I)`
with :math:`\\sigma_q \\to 0`: its mean :math:`\\mu` is optimised with Adam while the noise level
descends, each step minimising (Algorithm 1 of the paper, in invdiff's VE variables)

.. math::
    x_\\sigma &= \\mu + \\sigma \\varepsilon, \\qquad \\varepsilon \\sim \\mathcal N(0, I), \\\\
    \\hat\\varepsilon &= \\frac{x_\\sigma - D(x_\\sigma, \\sigma)}{\\sigma}
        \\quad\\text{(no gradient through the network)}, \\\\
    \\ell(\\mu) &= \\frac{\\|y - \\mathcal A(\\mu)\\|^2}{2 \\sigma_y^2}
        + \\lambda\\, w(\\sigma)\\, \\mathrm{sg}(\\hat\\varepsilon - \\varepsilon)^\\top \\mu .

VP form. The paper writes :math:`x_t = \\alpha_t \\mu + \\sigma^{vp}_t \\varepsilon` and
:math:`w_t = \\sigma^{vp}_t / \\alpha_t` (the "1/sqrt(SNR)" weighting). Dividing by
:math:`\\alpha_t` gives :math:`x_t / \\alpha_t = \\mu + \\sigma \\varepsilon` with the VE noise level
:math:`\\sigma = \\sigma^{vp}_t / \\alpha_t`, the same :math:`\\varepsilon` and the same
:math:`\\hat\\varepsilon`, so the paper's :math:`w_t` is exactly our :math:`\\sigma`
(``weighting="snr"``). The reference code's other weightings are options, all functions of
:math:`\\sigma`: ``"sqrt"`` :math:`\\sqrt\\sigma`, ``"square"`` :math:`\\sigma^2`, ``"log"``
:math:`\\log(1 + \\sigma)`, ``"trunc_linear"`` :math:`\\min(\\sigma, 1)`, ``"const"`` 1.

Scaling of lambda. The reference code minimises *means*,
``mean((y - A mu)^2) / 2 + lambda_ref * w * mean(sg(eps_hat - eps) * mu)``, which ignores
:math:`\\sigma_y` and makes ``lambda_ref`` depend on the sizes :math:`d_x, d_y`. Adam is invariant
to a global scale of the gradient, so our likelihood-scaled loss above reproduces the reference
exactly for

.. math:: \\lambda = \\lambda_{ref} \\, \\frac{d_y}{d_x \\, \\sigma_y^2},

and ``lam=None`` uses this with the reference default ``lambda_ref = 0.25`` (for Poisson noise,
:math:`1/\\sigma_y^2` is replaced by the mean of :math:`1/(g y_j)`).

Exact check (the tests). For a Gaussian prior :math:`\\mathcal N(m, s^2 I)`,
:math:`D(x, \\sigma) = m + s^2 (x - m) / (s^2 + \\sigma^2)`, so

.. math::
    \\mathbb E_\\varepsilon[\\hat\\varepsilon - \\varepsilon] = \\frac{\\sigma (\\mu - m)}{s^2 + \\sigma^2}
    \\;=\\; \\frac{\\sigma^{vp} \\alpha (\\mu - m)}{\\alpha^2 s^2 + (\\sigma^{vp})^2}
    \\quad\\text{(VP variables)} .

RED-Diff returns a point estimate (a mode-seeking variational mean), not posterior samples:
with ``n_samples > 1`` each copy of :math:`\\mu` sees its own noise, and their spread measures
the optimisation noise, not the posterior uncertainty.

Example
-------
A 3-d standard Gaussian prior observed through a 2 x 3 averaging matrix: ``mu`` is one point
per measurement.

>>> import torch
>>> import invdiff.diffusion.gmm as gmm
>>> from invdiff.operators import Matrix
>>> avg = Matrix(torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]), sigma=0.05)
>>> red = REDDiff(gmm.Gaussian(torch.zeros(3), 1.0), steps=30, progress=False)
>>> red(torch.tensor([[1.0, -1.0]]), avg, generator=torch.Generator().manual_seed(0)).shape
torch.Size([1, 3])
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from invdiff.samplers.registry import register
from invdiff.samplers.base import PosteriorSamples, Problem, Recorder, Sampler, resolve_sigmas
from invdiff.utils.progress import progress as progress_bar
from invdiff.utils.random import randn

__all__ = ["REDDiff", "WEIGHTINGS"]

WEIGHTINGS: dict[str, Callable[[float], float]] = {
    "snr": lambda s: s,  # sigma_vp / alpha = 1 / sqrt(SNR), the paper's choice
    "sqrt": lambda s: math.sqrt(s),
    "square": lambda s: s * s,
    "log": lambda s: math.log1p(s),
    "trunc_linear": lambda s: min(s, 1.0),
    "const": lambda s: 1.0,
}


@register("red-diff", "RED-Diff (Mardani et al. 2024): variational mode seeking, a point estimate")
class REDDiff(Sampler):
    """RED-Diff (Mardani et al. 2024): Adam on the variational mean over descending noise levels.

    :param prior: denoiser ``D(x, sigma)``.
    :param steps: number of noise levels (Adam steps).
    :param lam: regularisation weight :math:`\\lambda` in the likelihood-scaled loss (see the
        module docstring); ``None`` converts the reference default ``lambda_ref``.
    :param lam_ref: the reference code's ``lambda`` used when ``lam`` is None (0.25).
    :param lr: Adam learning rate (0.1; the paper's README example uses 0.5).
    :param betas: Adam betas ((0.9, 0.99) as the reference code).
    :param weighting: ``"snr"`` (the paper's), ``"sqrt"``, ``"square"``, ``"log"``,
        ``"trunc_linear"``, ``"const"``.
    :param sigmas: descending positive noise levels; default ``steps`` levels of the DDPM
        linear schedule (:func:`invdiff.diffusion.schedules.ddpm_sigmas`).
    :param init: ``"baseline"`` (``physics.baseline(y)``, else ``A_dagger(y)``; the reference
        code starts from the pseudo-inverse), ``"zeros"``,
        or a tensor ``(B, *x_shape)``.
    :param n_noise: noise draws averaged per step (1 in the paper); costs ``n_noise`` denoiser
        evaluations per sample per step, in the same batched call.
    :param progress: tqdm bar.
    :param on_nan: ``"raise"`` or ``"clip"``.
    """

    def __init__(
        self,
        prior,
        steps: int = 100,
        *,
        lam: float | None = None,
        lam_ref: float = 0.25,
        lr: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.99),
        weighting: str = "snr",
        sigmas: Tensor | None = None,
        init: str | Tensor = "baseline",
        n_noise: int = 1,
        progress: bool = True,
        on_nan: str = "raise",
    ) -> None:
        super().__init__(prior, progress=progress, on_nan=on_nan)
        steps, sigmas = resolve_sigmas(steps, sigmas, allow_final_zero=False)
        if lam is not None and not lam >= 0:
            raise ValueError(f"lam: expected a float >= 0 or None, got {lam!r}")
        if not lam_ref >= 0:
            raise ValueError(f"lam_ref: expected a float >= 0, got {lam_ref!r}")
        if not lr > 0:
            raise ValueError(f"lr: expected a float > 0, got {lr!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {sorted(WEIGHTINGS)}, got {weighting!r}")
        if isinstance(init, str) and init not in ("baseline", "zeros"):
            raise ValueError(f"init: expected 'baseline', 'zeros' or a tensor, got {init!r}")
        if not isinstance(n_noise, int) or n_noise < 1:
            raise ValueError(f"n_noise: expected an int >= 1, got {n_noise!r}")
        self.steps, self.lam, self.lam_ref, self.lr, self.betas = steps, lam, lam_ref, lr, tuple(betas)
        self.weighting, self.sigmas, self.init, self.n_noise = weighting, sigmas, init, n_noise

    # ------------------------------------------------------------------------------------
    def _sigmas(self) -> Tensor:
        if self.sigmas is not None:
            return self.sigmas
        from invdiff.diffusion.schedules import ddpm_sigmas

        return ddpm_sigmas(self.steps, append_zero=False)

    def lam_for(self, problem: Problem) -> Tensor:
        """The weight :math:`\\lambda` per row ``(n, 1, ..., 1)``: ``lam``, or ``lam_ref`` converted."""
        ones = torch.ones(problem.n, *([1] * len(problem.x_shape)), dtype=problem.dtype, device=problem.device)
        if self.lam is not None:
            return self.lam * ones
        d_x, d_y = math.prod(problem.x_shape), problem.y[0].numel()
        inv_var = problem.likelihood.mean_precision(problem.y)
        return (self.lam_ref * d_y / d_x) * inv_var.reshape(ones.shape) * ones

    def _init_mu(self, problem: Problem) -> Tensor:
        if isinstance(self.init, Tensor):
            expected = (problem.batch, *problem.x_shape)
            if tuple(self.init.shape) != expected:
                raise ValueError(f"init: expected shape {expected}, got {tuple(self.init.shape)}")
            mu = self.init.to(problem.device, problem.dtype).repeat(problem.n_samples, *([1] * len(problem.x_shape)))
        elif self.init == "baseline":
            with torch.no_grad():
                mu = problem.baseline()
        else:
            mu = problem.zeros()
        return mu.detach().clone()

    def _sample(self, problem: Problem, generator: torch.Generator | None, record: Recorder) -> PosteriorSamples:
        sigmas = self._sigmas().to(dtype=problem.dtype, device=problem.device)
        lam = self.lam_for(problem)
        K, n = self.n_noise, problem.n
        mu = torch.nn.Parameter(self._init_mu(problem))
        opt = torch.optim.Adam([mu], lr=self.lr, betas=self.betas)
        trace: dict = {"loss_data": [], "lam": lam.flatten().cpu()}
        record(0, mu)
        for i, sigma in enumerate(progress_bar(sigmas.tolist(), self.progress, desc="RED-Diff")):
            w = WEIGHTINGS[self.weighting](sigma)
            # 1. diffuse the mean: x = mu + sigma * eps (K draws per row, one batched call)
            eps = randn((K * n, *problem.x_shape), generator, problem.device, problem.dtype)
            x = mu.detach().repeat(K, *([1] * len(problem.x_shape))) + sigma * eps
            # 2. predicted noise, no gradient through the network
            with torch.no_grad():
                eps_hat = (x - self.denoiser(x, sigma)) / sigma
            reg = (eps_hat - eps).reshape(K, n, *problem.x_shape).mean(0)
            # 3. gradient of the loss: data term by a VJP through the operator, RED term closed form
            g_data, nll = problem.nll_grad(mu)
            grad = g_data + lam * w * reg
            grad = self.check(grad, i, fallback=torch.zeros_like(grad), trace=trace, what="RED-Diff gradient")
            # 4. Adam step on mu
            opt.zero_grad(set_to_none=True)
            mu.grad = grad
            opt.step()
            trace["loss_data"].append(nll)  # stays on the device: no sync per step
            record(i + 1, mu, last=i == len(sigmas) - 1)
        trace["loss_data"] = problem.fold(torch.stack(trace["loss_data"], 1)).movedim(2, 0).cpu()
        mu_out = self.check(mu.detach(), len(sigmas) - 1, what="mu")
        return PosteriorSamples(problem.fold(mu_out), None, nfe=self.denoiser.nfe * K, trace=trace)
