"""Posterior samplers over diffusion priors, on one API (:class:`Sampler`).

``DPS`` (Chung et al. 2023), ``REDDiff`` (Mardani et al. 2024), ``SMCEnsemble`` (Chen et al.
2025), ``TwistedSMC`` (Wu et al. 2023) and ``DDS`` (Chung, Lee & Ye 2024) take a prior
``D(x, sigma)`` and a deepinv ``Physics`` and return :class:`PosteriorSamples`; calling a
sampler gives a point estimate. ``make(name, prior, **settings)`` / ``available()`` build
them by name; the measurement model is a likelihood object (:mod:`invdiff.samplers.likelihood`).
"""
from invdiff.samplers.registry import available, make, register
from invdiff.samplers.base import Sampler
from invdiff.samplers.problem import Problem, make_problem
from invdiff.samplers.results import PosteriorSamples
from invdiff.samplers.likelihood import (
    ComplexGaussianLikelihood,
    GaussianLikelihood,
    Likelihood,
    PoissonGaussianLikelihood,
    PoissonLikelihood,
)
from invdiff.samplers.loop import DiffusionLoop
from invdiff.samplers.dps import DPS
from invdiff.samplers.dds import DDS
from invdiff.samplers.red_diff import REDDiff
from invdiff.samplers.smc import SMCEnsemble, TwistedSMC

__all__ = [
    "available", "make", "register", "Sampler", "Problem", "make_problem", "PosteriorSamples",
    "Likelihood", "GaussianLikelihood", "PoissonLikelihood", "PoissonGaussianLikelihood",
    "ComplexGaussianLikelihood", "DiffusionLoop", "DPS", "DDS", "REDDiff", "SMCEnsemble", "TwistedSMC",
]
