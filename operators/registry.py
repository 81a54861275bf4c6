"""The operator registry: ``make(name, **kwargs)`` and ``available()``.

An operator module registers a factory with ``@register("name", "one-line description")``.
Every module of this package is imported on the first lookup (no central list to edit), so a
new operator file only needs its ``@register`` lines. A made operator carries ``x_shape``:
the shape of one signal without the batch axis, so a caller can make a valid input, and
``linear`` (``True`` exactly for deepinv ``LinearPhysics``). Every factory accepts the common
arguments ``sigma``, ``gain``, ``noise_model``, ``generator``, ``device``, ``dtype``, resolved
by :func:`invdiff.operators.common.resolve_common` (one rule for conflicts).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

_FACTORIES: dict[str, tuple[Callable, str]] = {}
_loaded = False


def register(name: str, description: str = "") -> Callable:
    """Decorator: register ``factory(**kwargs) -> Physics`` under ``name``."""

    def deco(factory: Callable) -> Callable:
        old = _FACTORIES.get(name)
        # The same factory imported twice (e.g. by a doctest collector) replaces itself silently.
        if old is not None and old[0].__qualname__ != factory.__qualname__:
            raise ValueError(f"operator {name!r} is registered twice ({old[0].__qualname__} and {factory.__qualname__})")
        _FACTORIES[name] = (factory, description or (factory.__doc__ or "").strip().split("\n")[0])
        return factory

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    import invdiff.operators as pkg

    for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    _loaded = True


def available() -> dict[str, str]:
    """Registered operator names with a one-line description each."""
    _load_all()
    return {k: _FACTORIES[k][1] for k in sorted(_FACTORIES)}


def make(name: str, **kwargs):
    """Build the registered operator ``name`` with its defaults overridden by ``kwargs``.

    >>> from invdiff import operators
    >>> A = operators.make("matrix", m=3, n=5)          # doctest: +SKIP
    >>> y = A(torch.randn(2, *A.x_shape))               # doctest: +SKIP
    """
    _load_all()
    if name not in _FACTORIES:
        raise ValueError(f"unknown operator {name!r}; available: {', '.join(sorted(_FACTORIES))}")
    op = _FACTORIES[name][0](**kwargs)
    if not hasattr(op, "x_shape"):
        raise TypeError(f"operator factory {name!r} returned an object without x_shape")
    from invdiff.operators.common import is_linear

    linear = getattr(op, "linear", None)
    if linear is None:
        op.linear = is_linear(op)
    elif linear != is_linear(op):
        raise TypeError(f"operator factory {name!r}: op.linear={linear} but deepinv LinearPhysics={is_linear(op)}")
    return op
