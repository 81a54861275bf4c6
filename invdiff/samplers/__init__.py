"""Posterior samplers over diffusion priors, on one API (:class:`Sampler`).

``DPS`` (Chung et al. 2023), ``REDDiff`` (Mardani et al. 2024), ``SMCEnsemble`` (Chen et al.
2025) and ``TwistedSMC`` (Wu et al. 2023) take a prior ``D(x, sigma)`` and a deepinv
``Physics`` and return :class:`PosteriorSamples`; calling a sampler gives a point estimate.
"""
from invdiff.samplers.registry import available, make, register
from invdiff.samplers.base import PosteriorSamples, Problem, Sampler, make_problem
from invdiff.samplers.dps import DPS
from invdiff.samplers.red_diff import REDDiff
from invdiff.samplers.smc import SMCEnsemble, TwistedSMC

__all__ = ["available", "make", "register", "PosteriorSamples", "Problem", "Sampler", "make_problem", "DPS", "REDDiff", "SMCEnsemble", "TwistedSMC"]
