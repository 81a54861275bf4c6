r"""SVDD: derivative-free soft value-based decoding (Li et al. 2024, "Derivative-free guidance in
continuous and discrete diffusion models with soft value-based decoding"), on masked diffusion.

At each reverse step, ``candidates`` :math:`M` next states are drawn from the prior's ancestral
transition; each is scored by a value :math:`v(z') = -\tfrac12 \| r(\hat x(z')) \|^2` with the
posterior-mean signal :math:`\hat x(z') = \mathrm{dec}(\mathbb E_{p_\theta(\cdot \mid z')}[e])`
(SVDD-PM: one network call per candidate; exact at the last step where :math:`z'` is fully
unmasked); one candidate is kept with probability :math:`\propto \exp(v / \alpha)` (``alpha=0``:
the arg-max, the paper's recommended setting for reward maximisation). The kept candidate's
conditionals serve the next step, so NFE = ``steps * candidates`` (plus one for the first step).
No gradients are taken: only likelihood evaluations.

>>> import torch
>>> import invdiff.diffusion.discrete as discrete
>>> import invdiff.operators as ops
>>> codes = discrete.intensity_quantizer(3, (4,))
>>> prior = discrete.random_mixture(2, 4, 3, generator=torch.Generator().manual_seed(0), codebook=codes)
>>> svdd = SVDD(prior, steps=4, candidates=2)
>>> out = svdd.sample(torch.zeros(1, 2), ops.Matrix(torch.ones(2, 4), sigma=0.1), n_samples=3)
>>> out.samples.shape, out.nfe
(torch.Size([3, 1, 4]), 9)
"""
from __future__ import annotations

import torch

from invdiff.diffusion.discrete.categorical import sample_categorical
from invdiff.diffusion.discrete.denoiser import all_masked, conditionals
from invdiff.diffusion.discrete.sampling import unmask_step
from invdiff.diffusion.discrete.schedules import make_schedule
from invdiff.samplers.discrete_base import DiscreteSampler, expected_signal
from invdiff.samplers.registry import register

__all__ = ["SVDD"]


@register("svdd", "SVDD (Li et al. 2024): derivative-free soft value-based decoding, discrete priors")
class SVDD(DiscreteSampler):
    """Soft value-based decoding over a masked-diffusion prior (see the module doc).

    :param steps: reverse steps; :param candidates: proposals per step (NFE per step);
    :param alpha: selection temperature (0: arg-max of the value); :param schedule: masking schedule.
    """

    def __init__(self, prior, steps: int = 16, candidates: int = 4, alpha: float = 0.0,
                 schedule: str = "loglinear", *, progress: bool = False) -> None:
        super().__init__(prior, progress=progress)
        if not isinstance(candidates, int) or candidates < 1 or alpha < 0:
            raise ValueError(f"candidates: expected an int >= 1 and alpha >= 0, got {candidates!r}, {alpha!r}")
        self.steps, self.candidates, self.alpha = int(steps), candidates, float(alpha)
        self.schedule = make_schedule(schedule)

    def _sample(self, problem, prior, generator):
        n, M, V = problem.n, self.candidates, prior.vocab_size
        z = all_masked(prior, n, device=problem.device)
        t = self.schedule.grid(self.steps)
        with torch.no_grad():
            logp = conditionals(prior, z)
            for i in range(self.steps):
                a_t, a_s = self.schedule.alpha(t[i]), self.schedule.alpha(t[i + 1])
                p = 1.0 if i == self.steps - 1 else float((a_s - a_t) / (1 - a_t))
                cand = torch.stack([unmask_step(logp, z, p, V, generator) for _ in range(M)])  # (M, n, L)
                flat = cand.reshape(M * n, -1)
                logp_c = conditionals(prior, flat)  # one batched call: M evaluations per sample
                prior.nfe += M - 1
                x_hat = expected_signal(self.codebook, logp_c, problem.dtype)
                nll = torch.stack([problem.nll(x_hat[m * n:(m + 1) * n]) for m in range(M)])  # (M, n)
                v = -nll.double()
                pick = v.argmax(0) if self.alpha == 0 else sample_categorical((v / self.alpha).T, generator)
                rows = torch.arange(n, device=z.device)
                z = cand[pick, rows]
                logp = logp_c.reshape(M, n, *logp_c.shape[1:])[pick, rows]
        return z, None, {}
