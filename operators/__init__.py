"""Forward operators ``y = A(x) + noise`` as deepinv ``Physics`` (``LinearPhysics`` when linear).

Imported as ``invdiff.operators`` (the folder ``operators/`` is mapped by setup.py).
``make(name, **kwargs)`` builds a registered operator; ``available()`` lists them.
"""
from invdiff.operators.registry import available, make, register
from invdiff.operators.matrix import Matrix

__all__ = ["Matrix", "available", "make", "register"]
