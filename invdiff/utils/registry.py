"""A name -> factory registry whose entries register themselves, shared by the operator and the
sampler registries (:mod:`invdiff.operators.registry`, :mod:`invdiff.samplers.registry`).

Every module of the registry's package is imported on the first lookup (modules whose name
starts with ``_`` excepted), so a new file only needs its ``@register`` lines; no central list.

>>> reg = Registry("thing", "invdiff.utils")
>>> @reg.register("one", "the number one")
... def one():
...     return 1
>>> reg.get("one")(), reg.available()["one"]
(1, 'the number one')
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

__all__ = ["Registry"]


class Registry:
    """Factories of one kind (``"operator"``, ``"sampler"``) found in the package ``package``."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._factories: dict[str, tuple[Callable, str]] = {}
        self._loaded = False

    def register(self, name: str, description: str = "") -> Callable:
        """Decorator: register a factory (a class or a function) under ``name``."""

        def deco(factory: Callable) -> Callable:
            old = self._factories.get(name)
            # the same factory imported twice (e.g. by a doctest collector) replaces itself silently
            if old is not None and old[0].__qualname__ != factory.__qualname__:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({old[0].__qualname__} and {factory.__qualname__})")
            self._factories[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
            return factory

        return deco

    def _load_all(self) -> None:
        if self._loaded:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
        self._loaded = True

    def available(self) -> dict[str, str]:
        """Registered names with a one-line description each."""
        self._load_all()
        return {k: self._factories[k][1] for k in sorted(self._factories)}

    def get(self, name: str) -> Callable:
        """The factory of ``name``; ``ValueError`` listing the available names otherwise."""
        self._load_all()
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._factories))}")
        return self._factories[name][0]
