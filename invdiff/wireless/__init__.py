"""Wireless channel estimation: classical estimators (LS, LMMSE, OMP) and diffusion estimators.

Channels come from :mod:`invdiff.datasets.channels` (HPSM), measurements from
:class:`invdiff.operators.channel.HybridBeamforming`; ``invdiff bench channel`` compares them.
"""
from invdiff.wireless.estimators import (
    LMMSE, angular_dictionary, array_positions, kron_dictionary, least_squares, ls_nmse, omp, polar_dictionary,
)
from invdiff.wireless.diffusion import annealed_langevin, pnp_ode

__all__ = [
    "LMMSE", "angular_dictionary", "array_positions", "kron_dictionary", "least_squares", "ls_nmse", "omp",
    "polar_dictionary", "annealed_langevin", "pnp_ode",
]
