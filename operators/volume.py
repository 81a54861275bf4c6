"""A 2D operator applied slice by slice to a 3D volume, in chunks of slices.

For DiffusionMBIR-style 3D reconstruction (Chung et al., CVPR 2023): the volume
``(B, C, D, H, W)`` is cut along one spatial axis into 2D slices, each measured by the same
2D operator (sparse-view CT per axial slice, CS-MRI per slice). Slices go through the 2D
operator as a batch, ``chunk`` slices at a time, which bounds the memory of the intermediate
buffers (a CT projection of a slice is much larger than the slice) at no cost in speed once a
chunk fills the machine.
"""
from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin
from invdiff.operators.common import pop_common, resolve_common
from invdiff.operators.registry import register


class Volume(OperatorMixin, LinearPhysics):
    r"""The block-diagonal operator :math:`A = \operatorname{diag}(A_{2D}, \dots, A_{2D})` over slices.

    .. math::
        y_{:, d} = A_{2D}\, x_{[d]}, \qquad (A^\top y)_{[d]} = A_{2D}^\top\, y_{:, d},
        \qquad d = 1, \dots, D,

    where :math:`x_{[d]}` is slice ``d`` of ``x`` along ``axis``. The adjoint is exact whenever
    the 2D adjoint is. Measurements have shape ``(B, D, *op2d.y_shape)``.

    :param op2d: a 2D linear operator with ``x_shape = (C, h, w)`` (any invdiff operator, or a
        deepinv ``LinearPhysics`` given ``x_shape``).
    :param depth: number of slices ``D``.
    :param axis: the slice axis of ``(B, C, D, H, W)``: 2 (D, default), 3 (H) or 4 (W); the
        other two spatial axes, in order, are the 2D operator's ``(h, w)``.
    :param chunk: slices per call of the 2D operator.
    :param sigma, gain, noise_model, generator, device, dtype: the common arguments of the volume
        operator (:mod:`invdiff.operators.common`); the noise model of ``op2d`` is not used.

    >>> from invdiff.operators.mri import SingleCoilMRI
    >>> vol = Volume(SingleCoilMRI(torch.ones(8, 8)), depth=4)
    >>> vol.x_shape, vol.y_shape
    ((2, 4, 8, 8), (4, 2, 8, 8))
    """

    def __init__(
        self,
        op2d,
        depth: int,
        axis: int = 2,
        chunk: int = 32,
        x_shape: tuple[int, int, int] | None = None,
        sigma: float | None = None,
        gain: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        xs2 = tuple(x_shape if x_shape is not None else getattr(op2d, "x_shape", ()))
        if len(xs2) != 3:
            raise ValueError(f"op2d: expected an operator with x_shape (C, h, w), got {xs2!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth: expected an int >= 1, got {depth!r}")
        if axis < 0:
            axis += 5
        if axis not in (2, 3, 4):
            raise ValueError(f"axis: expected 2, 3 or 4 (a spatial axis of (B, C, D, H, W)), got {axis}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk: expected an int >= 1, got {chunk!r}")
        poisson = getattr(op2d, "supports_poisson", True)
        if device is None and isinstance(op2d, torch.nn.Module):
            device = next(op2d.buffers(), torch.empty(0)).device  # follow the 2D operator
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype, poisson=poisson)
        super().__init__(noise_model=common.noise_model, device=common.device)
        self.supports_poisson = poisson
        self.op2d, self.depth, self.axis, self.chunk = op2d, depth, axis, chunk
        C, h, w = xs2
        spatial = [h, w]
        spatial.insert(axis - 2, depth)
        self.x_shape = (C, *spatial)
        self.slice_shape = xs2
        ys2 = getattr(op2d, "y_shape", None)
        if ys2 is None:  # a foreign operator: one probe call
            with torch.no_grad():
                ys2 = tuple(op2d.A(torch.zeros(1, *xs2)).shape[1:])
        self.y_shape = (depth, *ys2)
        common.finish(self)

    def _slices(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C, D, H, W) -> (B * D, C, h, w)
        return x.movedim(self.axis, 1).reshape(-1, *self.slice_shape)

    def _unslice(self, s: torch.Tensor, batch: int) -> torch.Tensor:
        return s.reshape(batch, self.depth, *self.slice_shape).movedim(1, self.axis)

    def _map(self, f, t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] <= self.chunk:
            return f(t)
        return torch.cat([f(t[i : i + self.chunk]) for i in range(0, t.shape[0], self.chunk)])

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Slice-wise :math:`A_{2D}`: ``(B, C, D, H, W) -> (B, D, *op2d.y_shape)``."""
        self.check_x(x)
        y = self._map(self.op2d.A, self._slices(x))
        return y.reshape(x.shape[0], *self.y_shape)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Slice-wise :math:`A_{2D}^\top`: ``(B, D, *op2d.y_shape) -> (B, C, D, H, W)``."""
        self.check_y(y)
        x = self._map(self.op2d.A_adjoint, y.reshape(-1, *self.y_shape[1:]))
        return self._unslice(x, y.shape[0])

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""The 2D operator's baseline on every slice (FBP per slice for CT, zero-filled for MRI)."""
        self.check_y(y)
        x = self._map(lambda t: self.op2d.baseline(t, **kwargs), y.reshape(-1, *self.y_shape[1:]))
        return self._unslice(x, y.shape[0])


@register("volume-ct", "sparse-view parallel-beam CT on every axial slice of a (B, 1, D, N, N) volume")
def volume_ct(size: int = 64, depth: int | None = None, views: int = 8, axis: int = 2, chunk: int = 32, **kwargs) -> Volume:
    """DiffusionMBIR's setting: ``views``-view CT (default 8) per slice along ``axis``; the common
    arguments (noise, generator, device, dtype) go to the volume operator, the rest to ``CT``."""
    from invdiff.operators.ct import CT

    common = pop_common(kwargs)
    op2d = CT(size, angles=views, device=common.get("device"), **kwargs)
    return Volume(op2d, depth=size if depth is None else depth, axis=axis, chunk=chunk, **common)


@register("volume-mri", "single-coil Cartesian MRI (same mask) on every slice of a (B, 2, D, N, N) volume")
def volume_mri(size: int = 64, depth: int | None = None, acceleration: float = 4, axis: int = 2, chunk: int = 32,
               **kwargs) -> Volume:
    """CS-MRI per slice: the ``mri-4x`` operator (``acceleration``, mask kind, seed) on each slice;
    the common arguments go to the volume operator."""
    from invdiff.operators.mri import mri_4x

    common = pop_common(kwargs)
    op2d = mri_4x(size=size, acceleration=acceleration, device=common.get("device"), **kwargs)
    return Volume(op2d, depth=size if depth is None else depth, axis=axis, chunk=chunk, **common)
