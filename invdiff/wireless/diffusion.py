r"""Diffusion channel estimators as functions: ``x_hat, nfe = pnp_ode(prior, y, physics, sigma_y)``.

Thin wrappers of the registered samplers :class:`invdiff.samplers.pnp_ode.PnPODE` (``"pnp-ode"``,
the DiffPace-style deterministic plug-and-play ODE, few steps) and
:class:`invdiff.samplers.pnp_ode.AnnealedLangevin` (``"annealed-langevin"``, the score-based
estimator of Arvinte and Tamir 2022, many steps); the equations are in that module. ``sigma_y``
is the noise std per (real, imag) channel, :math:`\sigma_n/\sqrt2` for complex noise of variance
:math:`\sigma_n^2` (``physics.noise_var`` of :class:`~invdiff.operators.channel.HybridBeamforming`).

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators.matrix import Matrix
>>> prior = Gaussian(torch.zeros(4), 1.0); A = Matrix(torch.eye(4))
>>> x, nfe = pnp_ode(prior, torch.ones(1, 4), A, sigma_y=0.1, steps=5, generator=torch.Generator().manual_seed(0))
>>> x.shape, nfe
(torch.Size([1, 4]), 5)
"""
from __future__ import annotations

import torch

from invdiff.samplers.pnp_ode import AnnealedLangevin, PnPODE

__all__ = ["pnp_ode", "annealed_langevin"]


def pnp_ode(prior, y: torch.Tensor, physics, sigma_y: float, steps: int = 20, n_runs: int = 1,
            generator: torch.Generator | None = None, **settings) -> tuple[torch.Tensor, int]:
    """DiffPace-style deterministic PnP-ODE estimate ``(B, *x_shape)`` and its NFE per estimate
    (``settings`` of :class:`~invdiff.samplers.pnp_ode.PnPODE`: ``sigma_max``, ``sigma_min``, ``rho``,
    ``lam``). ``n_runs > 1`` averages that many runs from independent starts (NFE ``steps * n_runs``)."""
    out = PnPODE(prior, steps, progress=False, **settings).sample(y, physics, n_samples=n_runs, generator=generator,
                                                                  sigma_y=sigma_y)
    return out.samples.mean(0), out.nfe * n_runs


def annealed_langevin(prior, y: torch.Tensor, physics, sigma_y: float, levels: int = 200,
                      steps_per_level: int = 3, generator: torch.Generator | None = None,
                      **settings) -> tuple[torch.Tensor, int]:
    """Annealed-Langevin estimate (the last iterate) ``(B, *x_shape)`` and its NFE (``settings`` of
    :class:`~invdiff.samplers.pnp_ode.AnnealedLangevin`: ``sigma_max``, ``sigma_min``, ``eps``)."""
    out = AnnealedLangevin(prior, levels, steps_per_level, progress=False, **settings).sample(
        y, physics, generator=generator, sigma_y=sigma_y)
    return out.samples[0], out.nfe
