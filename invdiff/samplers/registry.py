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

import importlib
import pkgutil
from collections.abc import Callable

__all__ = ["register", "available", "make"]

_FACTORIES: dict[str, tuple[Callable, str]] = {}
_loaded = False


def register(name: str, description: str = "") -> Callable:
    """Decorator: register ``factory(prior, **kwargs) -> Sampler`` (a class or a function) under ``name``."""

    def deco(factory: Callable) -> Callable:
        old = _FACTORIES.get(name)
        if old is not None and old[0].__qualname__ != factory.__qualname__:
            raise ValueError(f"sampler {name!r} is registered twice ({old[0].__qualname__} and {factory.__qualname__})")
        doc = description or (factory.__doc__ or "").strip().split("\n")[0]
        _FACTORIES[name] = (factory, doc)
        return factory

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import invdiff.samplers as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    _loaded = True


def available() -> dict[str, str]:
    """Registered sampler names with a one-line description each."""
    _load_all()
    return {k: _FACTORIES[k][1] for k in sorted(_FACTORIES)}


def make(name: str, prior, **kwargs):
    """Build the registered sampler ``name`` over ``prior`` with its defaults overridden by ``kwargs``.

    Unknown names and unknown settings raise ``ValueError`` naming what is accepted.
    """
    _load_all()
    if name not in _FACTORIES:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    factory = _FACTORIES[name][0]
    try:
        return factory(prior, **kwargs)
    except TypeError as e:
        import inspect

        target = factory.__init__ if isinstance(factory, type) else factory
        params = inspect.signature(target).parameters
        allowed = [p for p in params if p not in ("self", "prior") and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"sampler {name!r}: unknown setting(s) {unknown}; accepted: {allowed}") from None
        raise
