r"""Split Gibbs discrete diffusion posterior sampling (SGDD; Chu, Wu, Chen, Song & Yue 2025,
"Split Gibbs Discrete Diffusion Posterior Sampling"), on a masked-diffusion prior.

Split Gibbs sampling adds an auxiliary sequence :math:`z` tied to :math:`x` by a Hamming
potential and alternates two conditionals of

.. math::
    \pi_\eta(x, z) \propto p_\theta(x)\, \exp\!\big(-\eta\, d_H(x, z)\big)\,
        \exp\!\big(-\tfrac12 \| r(\mathrm{dec}(z)) \|^2\big),

which tends to the posterior as :math:`\eta \to \infty` (:math:`z = x`):

1. Likelihood step: :math:`z \sim \pi_\eta(z \mid x) \propto \exp(-\tfrac12\|r(\mathrm{dec}(z))\|^2
   - \eta\, d_H(x, z))` by ``mh_steps`` Metropolis-Hastings moves started at :math:`z = x`
   (operator calls only). A move changes ``block`` random positions, each to a neighbouring
   level :math:`v \pm 1` (or, with probability ``jump``, to a uniform level); the proposal is
   symmetric, so the acceptance is the target ratio.
2. Prior step: :math:`x \sim p_\theta(x \mid z)`, the denoising of :math:`z` at time
   :math:`t_k`: each token of :math:`z` is masked with probability :math:`1 - \alpha_{t_k}`,
   then ``denoise_steps`` ancestral steps of the prior from :math:`t_k` to 0 (network calls).

Masking at rate :math:`1 - \alpha` and redrawing the masked tokens uniformly is the uniform
kernel :math:`q(z_l \mid x_l) \propto \exp(-\eta\, [z_l \ne x_l])` with
:math:`\eta_k = \log(1 + V \alpha_{t_k} / (1 - \alpha_{t_k}))`; this ties the two steps (the
paper's absorbing-state variant anneals :math:`\eta` with the denoising time in the same way;
the exact constant is ours). The times :math:`t_k` decrease linearly from ``t_max`` to
``t_min`` over ``iterations`` outer steps (the first prior step starts fully masked, i.e. an
unconditional draw); the returned sample is the last prior-step :math:`x`.
NFE = ``iterations * denoise_steps``.

>>> import torch
>>> from invdiff.diffusion.discrete import random_mixture, intensity_quantizer
>>> from invdiff.operators import Matrix
>>> prior = random_mixture(2, 4, 3, generator=torch.Generator().manual_seed(0), codebook=intensity_quantizer(3, (4,)))
>>> out = SGDD(prior, iterations=3, mh_steps=5).sample(torch.zeros(1, 2), Matrix(torch.ones(2, 4), sigma=0.1), n_samples=2)
>>> out.samples.shape, out.nfe
(torch.Size([2, 1, 4]), 3)
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from invdiff.diffusion.discrete.denoiser import all_masked, conditionals
from invdiff.diffusion.discrete.loss import mask_tokens
from invdiff.diffusion.discrete.sampling import unmask_step
from invdiff.diffusion.discrete.schedules import make_schedule
from invdiff.samplers.discrete_base import DiscreteSampler
from invdiff.samplers.registry import register
from invdiff.utils.random import rand

__all__ = ["SGDD", "hamming_mh"]


def hamming_mh(z: Tensor, x: Tensor, eta: float, nll, vocab_size: int, steps: int, block: int = 1,
               jump: float = 0.1, generator: torch.Generator | None = None) -> tuple[Tensor, float]:
    r"""``steps`` Metropolis-Hastings moves on :math:`\exp(-\mathrm{nll}(z) - \eta\, d_H(x, z))` from ``z``
    (``(n, L)``); ``nll(tokens) -> (n,)``. Returns the chain's state and the acceptance rate."""
    n, L = z.shape
    dev = z.device
    e_z = nll(z).double() + eta * (z != x).sum(1).double()
    accepted = 0.0
    rows = torch.arange(n, device=dev).unsqueeze(1)
    for _ in range(steps):
        pos = rand((n, L), generator=generator, device=dev, dtype=torch.float64).topk(block, dim=1).indices
        cur = z.gather(1, pos)
        step = torch.where(rand(cur.shape, generator=generator, device=dev, dtype=torch.float64) < 0.5, -1, 1)
        uniform = (rand(cur.shape, generator=generator, device=dev, dtype=torch.float64) * vocab_size).long()
        new = torch.where(rand(cur.shape, generator=generator, device=dev, dtype=torch.float64) < jump, uniform, cur + step)
        valid = ((new >= 0) & (new < vocab_size)).all(1)
        prop = z.clone()
        prop[rows, pos] = new.clamp(0, vocab_size - 1)
        e_p = nll(prop).double() + eta * (prop != x).sum(1).double()
        u = rand((n,), generator=generator, device=dev, dtype=torch.float64)
        acc = valid & (torch.log(u) < e_z - e_p)
        z = torch.where(acc.unsqueeze(1), prop, z)
        e_z = torch.where(acc, e_p, e_z)
        accepted += float(acc.double().mean())
    return z, accepted / max(steps, 1)


@register("sgdd", "split Gibbs discrete diffusion posterior sampling (Chu et al. 2025), discrete priors")
class SGDD(DiscreteSampler):
    """Split Gibbs sampler over a masked-diffusion prior (see the module doc).

    :param iterations: outer (likelihood, prior) rounds.
    :param denoise_steps: ancestral steps per prior step (network calls per round).
    :param mh_steps: Metropolis-Hastings moves per likelihood step (operator calls only).
    :param block: positions changed per move; :param jump: probability of a uniform (not +-1) level.
    :param t_max: denoising time of the second round (the first starts fully masked);
        :param t_min: of the last round.
    """

    def __init__(self, prior, iterations: int = 16, denoise_steps: int = 1, mh_steps: int = 100, block: int = 1,
                 jump: float = 0.1, t_max: float = 0.9, t_min: float = 0.02, schedule: str = "loglinear", *,
                 progress: bool = False) -> None:
        super().__init__(prior, progress=progress)
        for name, v in (("iterations", iterations), ("denoise_steps", denoise_steps), ("block", block)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if not isinstance(mh_steps, int) or mh_steps < 0 or not 0 <= jump <= 1 or not 0 < t_min <= t_max < 1:
            raise ValueError(f"expected mh_steps >= 0, jump in [0, 1], 0 < t_min <= t_max < 1; got "
                             f"{mh_steps!r}, {jump}, {t_min}, {t_max}")
        self.iterations, self.denoise_steps, self.mh_steps = iterations, denoise_steps, mh_steps
        self.block, self.jump, self.t_max, self.t_min = block, float(jump), float(t_max), float(t_min)
        self.schedule = make_schedule(schedule)

    def times(self) -> list[float]:
        """Denoising time of each round: 1 (fully masked), then ``t_max`` down to ``t_min``."""
        k = self.iterations - 1
        return [1.0] + [self.t_max + (self.t_min - self.t_max) * j / max(k - 1, 1) for j in range(k)]

    def eta(self, t: float) -> float:
        r""":math:`\eta = \log(1 + V \alpha_t / (1 - \alpha_t))`."""
        a = float(self.schedule.alpha(torch.tensor(t, dtype=torch.float64)))
        return math.log1p(self.prior.vocab_size * a / max(1 - a, 1e-12))

    def denoise(self, prior, z: Tensor, t: float, generator) -> Tensor:
        """The prior step: mask ``z`` at time ``t``, then ancestral steps from ``t`` to 0."""
        V = prior.vocab_size
        tt = torch.full((z.shape[0],), t, dtype=torch.float64, device=z.device)
        z = mask_tokens(z, tt, self.schedule, V, generator)
        grid = torch.linspace(t, 0.0, self.denoise_steps + 1, dtype=torch.float64)
        for i in range(self.denoise_steps):
            a_t, a_s = self.schedule.alpha(grid[i]), self.schedule.alpha(grid[i + 1])
            p = 1.0 if i == self.denoise_steps - 1 else float((a_s - a_t) / (1 - a_t))
            with torch.no_grad():
                z = unmask_step(conditionals(prior, z), z, p, V, generator)
        return z

    def _sample(self, problem, prior, generator):
        V = prior.vocab_size
        x = all_masked(prior, problem.n, device=problem.device)
        nll = lambda tok: problem.nll(self.decode(tok, problem))  # noqa: E731
        acc, times = [], self.times()
        with torch.no_grad():
            for k, t in enumerate(times):
                x = self.denoise(prior, x, t, generator)
                if k + 1 < len(times):
                    x, a = hamming_mh(x, x.clone(), self.eta(times[k + 1]), nll, V, self.mh_steps, self.block,
                                      self.jump, generator)
                    acc.append(a)
        return x, None, {"acceptance": acc}
