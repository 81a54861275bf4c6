r"""Sequential Monte Carlo over the masked-diffusion chain (a twisted SMC in the manner of Wu et
al. 2023, TDS, with the prior transition as proposal; written for discrete priors).

``n_samples`` particles per measurement follow the prior's ancestral transition; each carries a
twist :math:`\tilde\ell(z) = \exp(-\tfrac{\gamma}{2}\|r(\hat x(z))\|^2)` built on the
posterior-mean signal :math:`\hat x(z) = \mathrm{dec}(\mathbb E_{p_\theta(\cdot\mid z)}[e])`,
and the incremental weight

.. math::
    \log w \mathrel{+}= \log \tilde\ell(z_{s}) - \log \tilde\ell(z_t), \qquad
    \tilde\ell(z_0) = p(y \mid \mathrm{dec}(z_0)) \text{ exactly at the last step},

so that the weighted particles target :math:`p_\theta(x \mid y)` exactly as the particle number
grows (any twist gives a consistent estimator; a good twist lowers the variance). Systematic
resampling when the effective sample size falls below ``ess_threshold * N``. NFE = ``steps``
per particle (one call per step). Returns ``log_weights``.

>>> import torch
>>> from invdiff.diffusion.discrete import random_mixture, intensity_quantizer
>>> from invdiff.operators import Matrix
>>> prior = random_mixture(2, 4, 3, generator=torch.Generator().manual_seed(0), codebook=intensity_quantizer(3, (4,)))
>>> out = MaskedSMC(prior, steps=4).sample(torch.zeros(1, 2), Matrix(torch.ones(2, 4), sigma=0.1), n_samples=8)
>>> out.samples.shape, out.log_weights.shape
(torch.Size([8, 1, 4]), torch.Size([8, 1]))
"""
from __future__ import annotations

import torch

from invdiff.diffusion.discrete.denoiser import all_masked, conditionals
from invdiff.diffusion.discrete.sampling import unmask_step
from invdiff.diffusion.discrete.schedules import make_schedule
from invdiff.samplers.discrete_base import DiscreteSampler, expected_signal, systematic_resample
from invdiff.samplers.registry import register

__all__ = ["MaskedSMC"]


@register("masked-smc", "twisted SMC over the masked-diffusion chain (prior proposal), discrete priors")
class MaskedSMC(DiscreteSampler):
    """SMC over a masked-diffusion prior; the particles are the ``n_samples`` draws (see the module doc).

    :param steps: reverse steps; :param twist_scale: :math:`\\gamma` of the intermediate twists
        (0: plain importance sampling with the exact likelihood at the end);
    :param ess_threshold: resample when ESS < threshold * N.
    """

    def __init__(self, prior, steps: int = 32, twist_scale: float = 1.0, ess_threshold: float = 0.5,
                 schedule: str = "loglinear", *, progress: bool = False) -> None:
        super().__init__(prior, progress=progress)
        if twist_scale < 0 or not 0 <= ess_threshold <= 1:
            raise ValueError(f"expected twist_scale >= 0 and ess_threshold in [0, 1], got {twist_scale}, {ess_threshold}")
        self.steps, self.twist_scale, self.ess_threshold = int(steps), float(twist_scale), float(ess_threshold)
        self.schedule = make_schedule(schedule)

    def _log_twist(self, problem, logp, final: bool):
        x_hat = expected_signal(self.codebook, logp, problem.dtype)
        return -(1.0 if final else self.twist_scale) * problem.nll(x_hat).double()

    def _sample(self, problem, prior, generator):
        N, B, V = problem.n_samples, problem.batch, prior.vocab_size
        z = all_masked(prior, problem.n, device=problem.device)
        t = self.schedule.grid(self.steps)
        log_w = torch.zeros(problem.n, dtype=torch.float64, device=problem.device)
        ess_trace, resampled = [], 0
        with torch.no_grad():
            logp = conditionals(prior, z)
            log_twist = self._log_twist(problem, logp, final=False)
            for i in range(self.steps):
                last = i == self.steps - 1
                a_t, a_s = self.schedule.alpha(t[i]), self.schedule.alpha(t[i + 1])
                p = 1.0 if last else float((a_s - a_t) / (1 - a_t))
                z = unmask_step(logp, z, p, V, generator)
                logp = conditionals(prior, z) if not last else logp
                if last:  # fully unmasked: the exact likelihood of the decoded tokens
                    new_twist = -problem.nll(self.decode(z, problem)).double()
                else:
                    new_twist = self._log_twist(problem, logp, final=False)
                log_w = log_w + new_twist - log_twist
                log_twist = new_twist
                lw = log_w.reshape(N, B)
                ess = 1.0 / torch.softmax(lw, 0).pow(2).sum(0)
                ess_trace.append(float(ess.mean()))
                if not last and bool((ess < self.ess_threshold * N).any()):
                    idx = systematic_resample(lw, generator)  # (N, B) ancestors within each measurement
                    rows = (idx * B + torch.arange(B, device=z.device)).reshape(-1)
                    z, logp, log_twist = z[rows], logp[rows], log_twist[rows]
                    log_w = torch.zeros_like(log_w)
                    resampled += 1
        return z, log_w, {"ess": ess_trace, "resampled": resampled}
