"""invdiff: inverse problems with diffusion priors.

Layers (each usable alone):

- ``invdiff.operators``  forward operators (deepinv ``Physics``), ``y = A(x) + noise``
- ``invdiff.diffusion``  priors ``D(x, sigma) = E[x0 | x0 + sigma * eps = x]``, schedules, solvers
- ``invdiff.samplers``   posterior samplers ``x ~ p(x | y)``
- ``invdiff.surrogates`` PDE trajectory surrogates
- ``invdiff.datasets``   phantoms, fields, channels
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("invdiff")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def load_prior(name: str, device=None, size=None):
    """Load a shipped, trained prior ``D(x, sigma)`` by name (offline); ``size`` uses it at another
    image size on purpose (a warning; see ``invdiff.diffusion.zoo.use_at_size``)."""
    from invdiff.diffusion.zoo import load_prior as _load

    return _load(name, device=device, size=size)


__all__ = ["__version__", "load_prior"]
