"""Posterior samplers over diffusion priors, on one API (:class:`Sampler`).

``DPS`` (Chung et al. 2023), ``REDDiff`` (Mardani et al. 2023) and the SMC ensemble sampler
take a prior ``D(x, sigma)`` and a deepinv ``Physics`` and return :class:`PosteriorSamples`.
"""
from invdiff.samplers.base import PosteriorSamples, Problem, Sampler, make_problem

__all__ = ["PosteriorSamples", "Problem", "Sampler", "make_problem"]

try:  # samplers land one by one; the base API is always importable
    from invdiff.samplers.dps import DPS  # noqa: F401

    __all__.append("DPS")
except ModuleNotFoundError as e:  # pragma: no cover - only while the module is not written yet
    if e.name is None or not e.name.startswith("invdiff.samplers."):
        raise
try:
    from invdiff.samplers.red_diff import REDDiff  # noqa: F401

    __all__.append("REDDiff")
except ModuleNotFoundError as e:  # pragma: no cover - only while the module is not written yet
    if e.name is None or not e.name.startswith("invdiff.samplers."):
        raise
try:
    from invdiff.samplers.smc import SMCEnsemble, TwistedSMC  # noqa: F401

    __all__ += ["SMCEnsemble", "TwistedSMC"]
except ModuleNotFoundError as e:  # pragma: no cover - only while the module is not written yet
    if e.name is None or not e.name.startswith("invdiff.samplers."):
        raise
