"""Unguided masked-diffusion sampling as a (prior-only) baseline posterior sampler.

Draws from the prior, ignoring ``y``: ancestral sampling (Sahoo et al. 2024) over ``steps``
uniform time steps, NFE = ``steps``. The floor every guided discrete sampler must beat.

>>> import torch
>>> from invdiff.diffusion.discrete import random_mixture, intensity_quantizer
>>> from invdiff.operators import Matrix
>>> prior = random_mixture(2, 4, 3, generator=torch.Generator().manual_seed(0), codebook=intensity_quantizer(3, (4,)))
>>> out = MaskedUnguided(prior, steps=4).sample(torch.zeros(1, 2), Matrix(torch.ones(2, 4), sigma=0.1), n_samples=3)
>>> out.samples.shape, out.nfe
(torch.Size([3, 1, 4]), 4)
"""
from __future__ import annotations

from invdiff.diffusion.discrete.denoiser import all_masked
from invdiff.diffusion.discrete.sampling import ancestral_sample
from invdiff.samplers.discrete_base import DiscreteSampler
from invdiff.samplers.registry import register

__all__ = ["MaskedUnguided"]


@register("masked-unguided", "masked diffusion prior sampling, ignores y (discrete baseline)")
class MaskedUnguided(DiscreteSampler):
    """Prior samples of a masked-diffusion prior (ancestral, ``steps`` calls, ``schedule``)."""

    def __init__(self, prior, steps: int = 64, schedule: str = "loglinear", *, progress: bool = False) -> None:
        super().__init__(prior, progress=progress)
        self.steps, self.schedule = int(steps), schedule

    def _sample(self, problem, prior, generator):
        z = all_masked(prior, problem.n, device=problem.device)
        out = ancestral_sample(prior, problem.n, self.steps, self.schedule, generator, z=z)
        return out.tokens, None, {}
