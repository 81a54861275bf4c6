"""Noise models for the registry factories, built from deepinv's (no new noise code).

``make_noise(sigma=0.05)`` is deepinv's ``GaussianNoise``; ``make_noise(gain=1/I0)`` is
``PoissonNoise`` (photon counting, :math:`y = g \\, \\mathrm{Poisson}(Ax / g)`, mean ``Ax``);
both together give ``PoissonGaussianNoise``; neither gives ``ZeroNoise``. A ``torch.Generator``
makes the noise reproducible.
"""
from __future__ import annotations

import torch
from deepinv.physics import GaussianNoise, PoissonGaussianNoise, PoissonNoise, ZeroNoise
from deepinv.physics.noise import NoiseModel

from invdiff.utils.checks import check_positive


def make_noise(
    sigma: float | None = None,
    gain: float | None = None,
    generator: torch.Generator | None = None,
) -> NoiseModel:
    """A deepinv noise model: Gaussian (``sigma``), Poisson (``gain``), both, or none.

    .. math::
        y = z + \\sigma \\varepsilon, \\qquad y = g\\,\\mathrm{Poisson}(z / g),
        \\qquad y = g\\,\\mathrm{Poisson}(z / g) + \\sigma \\varepsilon.

    >>> make_noise(sigma=0.1).sigma.item()
    0.10000000149011612
    """
    if sigma is not None:
        check_positive("sigma", sigma, allow_zero=True)
    if gain is not None:
        check_positive("gain", gain)
    if sigma is not None and gain is not None:
        return PoissonGaussianNoise(gain=gain, sigma=sigma, rng=generator)
    if sigma is not None:
        return GaussianNoise(sigma=sigma, rng=generator)
    if gain is not None:
        return PoissonNoise(gain=gain, rng=generator)
    return ZeroNoise()
