"""The sampler registry: ``make(name, prior, **kwargs)`` and ``available()``.

Mirrors :mod:`invdiff.operators.registry`. A sampler module registers its class (or a factory
``factory(prior, **kwargs) -> Sampler``) with ``@register("name", "one-line description")``;
every module of :mod:`invdiff.samplers` is imported on the first lookup, so a new sampler file
needs no central list. The CLI and the benchmarks construct samplers only through here.

>>> from invdiff import samplers
>>> "dps" in samplers.available()
True
"""
from __future__ import annotations

from invdiff.utils.registry import Registry

__all__ = ["register", "available", "make"]

_REGISTRY = Registry("sampler", "invdiff.samplers")


def register(name: str, description: str = ""):
    """Decorator: register ``factory(prior, **kwargs) -> Sampler`` (a class or a function) under ``name``."""
    return _REGISTRY.register(name, description)


def available() -> dict[str, str]:
    """Registered sampler names with a one-line description each."""
    return _REGISTRY.available()


def make(name: str, prior, **kwargs):
    """Build the registered sampler ``name`` over ``prior`` with its defaults overridden by ``kwargs``.

    Unknown names and unknown settings raise ``ValueError`` naming what is accepted.
    """
    factory = _REGISTRY.get(name)
    try:
        return factory(prior, **kwargs)
    except TypeError:
        import inspect

        target = factory.__init__ if isinstance(factory, type) else factory
        params = inspect.signature(target).parameters
        allowed = [p for p in params if p not in ("self", "prior") and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"sampler {name!r}: unknown setting(s) {unknown}; accepted: {allowed}") from None
        raise
