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


class ComplexGaussianNoise(NoiseModel):
    r"""Circular complex Gaussian noise on complex data stored as (real, imag) channels.

    .. math:: y = z + n, \qquad n \sim \mathcal{CN}(0, \sigma^2 I), \qquad \mathbb E|n_j|^2 = \sigma^2,

    so each real channel gets std :math:`\sigma / \sqrt 2` (deepinv's ``GaussianNoise(s)`` on the
    same channels is :math:`\mathcal{CN}(0, 2 s^2)`). The samplers' matching likelihood is
    :class:`invdiff.samplers.likelihood.ComplexGaussianLikelihood`.

    >>> ComplexGaussianNoise(1.0, rng=torch.Generator().manual_seed(0))(torch.zeros(1, 2, 3)).shape
    torch.Size([1, 2, 3])
    """

    def __init__(self, sigma: float = 0.1, rng: torch.Generator | None = None) -> None:
        super().__init__(rng=rng)
        check_positive("sigma", sigma, allow_zero=True)
        self.sigma = float(sigma)

    def forward(self, x: torch.Tensor, seed: int | None = None, **kwargs) -> torch.Tensor:
        self.rng_manual_seed(seed)
        return x + (self.sigma / 2**0.5) * self.randn_like(x)
