"""Shared behaviour of invdiff operators: ``x_shape``, cheap input checks, ``baseline(y)``.

Every operator of :mod:`invdiff.operators` is a deepinv ``LinearPhysics`` that also mixes in
:class:`OperatorMixin`, which gives it

- ``x_shape``: the shape of one signal without the batch axis (``(n,)``, ``(C, H, W)``, ...);
- ``y_shape``: the shape of one measurement without the batch axis;
- ``check_x(x)`` / ``check_y(y)``: shape and dtype checks that cost nothing (no NaN scans, no
  device synchronisation) and run on every call of ``A`` / ``A_adjoint``;
- ``baseline(y)``: the classical, prior-free reconstruction of the modality (pseudo-inverse for
  :class:`~invdiff.operators.matrix.Matrix`, filtered back-projection for CT, zero-filled or
  SENSE for MRI, Wiener for blur). Samplers use it as a starting point and the demo as the
  "what you would do without a prior" column. Its contract: it returns a signal of shape
  ``(B, *x_shape)`` and, for noiseless data, lowers the data residual ``||A x - y||`` below
  ``||y||`` (the residual of ``x = 0``).
"""
from __future__ import annotations

import torch

from invdiff.utils.checks import check_floating, check_shape


class OperatorMixin:
    """``x_shape``/``y_shape`` bookkeeping, shape/dtype checks and the ``baseline`` hook."""

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]

    def check_x(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise unless ``x`` is a floating tensor of shape ``(B, *x_shape)``."""
        check_floating(name, x)
        check_shape(name, x, (None, *self.x_shape))

    def check_y(self, y: torch.Tensor, name: str = "y") -> None:
        """Raise unless ``y`` is a floating tensor of shape ``(B, *y_shape)``."""
        check_floating(name, y)
        check_shape(name, y, (None, *self.y_shape))

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:  # pragma: no cover - abstract
        """The classical reconstruction of this modality from ``y`` (see the module docstring)."""
        raise NotImplementedError(f"{type(self).__name__} has no baseline reconstruction")
