r"""Complex signals as two real channels ``(real, imag)``: the one pair of conversions.

invdiff follows deepinv at every boundary: a complex image ``z`` of shape ``(B, *s)`` is the
real tensor ``(B, 2, *s)`` with ``x[:, 0] = Re z`` and ``x[:, 1] = Im z`` (MRI images and
k-space, wireless channels). Inside an operator the complex form is used for FFTs and
products. These helpers are the only place that converts; they work on torch tensors and, for
data files, on numpy arrays.

.. math::
    x = \bigl(\operatorname{Re} z,\ \operatorname{Im} z\bigr) \in \mathbb R^{B \times 2 \times \cdots},
    \qquad z = x_{:,0} + i\, x_{:,1}.

>>> z = torch.tensor([[1 + 2j, 3 - 1j]])
>>> x = to_channels(z)
>>> x
tensor([[[ 1.,  3.],
         [ 2., -1.]]])
>>> torch.equal(to_complex(x), z)
True
"""
from __future__ import annotations

import numpy as np
import torch


def to_complex(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``(B, 2, ...)`` real -> ``(B, ...)`` complex: ``x.select(dim, 0) + 1j * x.select(dim, 1)``.

    One pass (``torch.complex``), works on strided input; the result is a new tensor.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x: expected a real floating tensor with (real, imag) channels, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.shape[dim] != 2:
        raise ValueError(f"x: expected 2 channels (real, imag) on axis {dim}, got shape {tuple(x.shape)}")
    return torch.complex(x.select(dim, 0), x.select(dim, 1))


def to_channels(z: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``(B, ...)`` complex -> ``(B, 2, ...)`` real with the channels on axis ``dim``.

    A view of ``z`` (``torch.view_as_real``, no copy) for ``dim`` within ``z``'s axes.
    """
    if not isinstance(z, torch.Tensor) or not z.is_complex():
        raise TypeError(f"z: expected a complex tensor, got {getattr(z, 'dtype', type(z).__name__)}")
    return torch.view_as_real(z).movedim(-1, dim)


def to_channels_np(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """numpy: complex ``a`` -> real array with a new ``(real, imag)`` axis at ``axis``
    (for data files; a real array is returned unchanged)."""
    a = np.asarray(a)
    if not np.iscomplexobj(a):
        return a
    return np.stack([a.real, a.imag], axis=axis)

