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

from invdiff.utils.registry import Registry

_REGISTRY = Registry("operator", "invdiff.operators")


def register(name: str, description: str = ""):
    """Decorator: register ``factory(**kwargs) -> Physics`` under ``name``."""
    return _REGISTRY.register(name, description)


def available() -> dict[str, str]:
    """Registered operator names with a one-line description each."""
    return _REGISTRY.available()


def make(name: str, **kwargs):
    """Build the registered operator ``name`` with its defaults overridden by ``kwargs``.

    >>> from invdiff import operators
    >>> A = operators.make("matrix", m=3, n=5)          # doctest: +SKIP
    >>> y = A(torch.randn(2, *A.x_shape))               # doctest: +SKIP
    """
    op = _REGISTRY.get(name)(**kwargs)
    if not hasattr(op, "x_shape"):
        raise TypeError(f"operator factory {name!r} returned an object without x_shape")
    from invdiff.operators.common import is_linear

    linear = getattr(op, "linear", None)
    if linear is None:
        op.linear = is_linear(op)
    elif linear != is_linear(op):
        raise TypeError(f"operator factory {name!r}: op.linear={linear} but deepinv LinearPhysics={is_linear(op)}")
    return op
