"""Observation operators for PDE fields and trajectories, and their composition with a solver.

All are ``LinearPhysics`` with exact adjoints. They act on the trailing axes of a field
``(B, C, *grid)`` or a trajectory ``(B, C, n_frames, *grid)`` (the time axis is axis 2):

* :class:`PointSensors`: values at sensor positions, (bi)linear interpolation of the grid.
* :class:`SpatialSubsample`: every ``factor``-th grid point along each spatial axis.
* :class:`TemporalSubsample`: every ``factor``-th frame.
* :class:`TimeWindow`: frames ``start <= k < stop``.
* :func:`observe`: ``observation o solver`` as one deepinv ``Physics`` with ``x_shape``.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from deepinv.physics import LinearPhysics, Physics
from deepinv.physics.forward import compose

from invdiff.operators.common import LinearFlag, check_positive_finite, is_linear
from invdiff.utils import check_floating
from invdiff.utils.random import rand


def _as_tuple(v, d: int, name: str) -> tuple:
    v = (v,) * d if isinstance(v, (int, float)) else tuple(v)
    if len(v) != d:
        raise ValueError(f"{name}: expected {d} values, got {v}")
    return v


class PointSensors(LinearFlag, LinearPhysics):
    """Point sensors with (bi)linear interpolation of a 1D/2D grid.

    For a sensor at :math:`p` with cell :math:`j = \\lfloor p / h \\rfloor` and offset
    :math:`\\theta = p/h - j`, in 1D

    .. math::
        y = (1 - \\theta)\\, u_j + \\theta\\, u_{j+1},

    and the tensor product of these weights in 2D. The adjoint scatters :math:`y` back with the
    same weights (``index_add``), so :math:`\\langle A u, y\\rangle = \\langle u, A^\\top y\\rangle` exactly.

    :param grid: ``(n,)`` or ``(n_x, n_y)``.
    :param positions: ``(S, d)`` physical coordinates, in :math:`[0, L)` (periodic) or :math:`[0, L]`.
    :param length: domain size per axis.
    :param periodic: grid :math:`x_j = jL/n` wrapping around (torus) if ``True``; else nodes
        :math:`x_j = jL/(n-1)` including both ends (e.g. :class:`~invdiff.operators.pde.burgers.BurgersDirichlet`).
    :param time_axis: ``True`` if inputs are trajectories ``(B, C, n_frames, *grid)`` (the
        sensors then read every frame); ``n_frames`` then gives ``x_shape``.

    >>> op = PointSensors((8,), positions=torch.tensor([[0.0], [0.0625]]), length=1.0)
    >>> op(torch.arange(8.0).reshape(1, 1, 8))
    tensor([[[0.0000, 0.5000]]])
    """

    def __init__(self, grid: Sequence[int], positions: torch.Tensor, length: float | Sequence[float] = 1.0,
                 periodic: bool = True, time_axis: bool = False, n_frames: int | None = None, **kwargs):
        super().__init__(**kwargs)
        grid = (int(grid),) if isinstance(grid, int) else tuple(int(n) for n in grid)
        d = len(grid)
        if d not in (1, 2):
            raise ValueError(f"grid: expected 1 or 2 axes, got {grid}")
        lengths = tuple(float(v) for v in _as_tuple(length, d, "length"))
        positions = torch.as_tensor(positions, dtype=torch.float64)
        if positions.dim() == 1 and d == 1:
            positions = positions[:, None]
        if positions.dim() != 2 or positions.shape[1] != d or positions.shape[0] < 1:
            raise ValueError(f"positions: expected shape (S, {d}) with S >= 1, got {tuple(positions.shape)}")
        for i, L in enumerate(lengths):
            check_positive_finite("length", L)
            p = positions[:, i]
            hi_ok = (p < L) if periodic else (p <= L)
            if not bool(((p >= 0) & hi_ok).all()):
                raise ValueError(f"positions: axis {i} expected in [0, {L}{')' if periodic else ']'}, got min {p.min().item()}, max {p.max().item()}")
        if time_axis and (n_frames is None or n_frames < 1):
            raise ValueError(f"n_frames: expected a positive frame count with time_axis=True, got {n_frames}")
        self.grid, self.lengths, self.periodic, self.time_axis = grid, lengths, periodic, time_axis
        self.positions = positions
        self.x_shape = (1, n_frames, *grid) if time_axis else (1, *grid)
        # per axis: lower index, upper index, weight of upper
        corners = []
        for i, (n, L) in enumerate(zip(grid, lengths)):
            h = L / n if periodic else L / (n - 1)
            s = positions[:, i] / h
            j = torch.floor(s).long()
            if not periodic:
                j = j.clamp(max=n - 2)
            theta = s - j
            j1 = (j + 1) % n if periodic else j + 1
            corners.append(((j % n, 1 - theta), (j1, theta)))
        idx, w = [], []
        strides = [math.prod(grid[i + 1:]) for i in range(d)]
        for combo in itertools.product(*corners):
            idx.append(sum(c[0] * st for c, st in zip(combo, strides)))
            w.append(math.prod(c[1] for c in combo) if d > 1 else combo[0][1])
        self.register_buffer("index", torch.stack(idx, 1), persistent=False)  # (S, 2^d)
        self.register_buffer("weight", torch.stack(w, 1), persistent=False)  # (S, 2^d) float64

    @property
    def n_sensors(self) -> int:
        return self.index.shape[0]

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one output of an input of shape ``x_shape``: the grid axes become ``(S,)``."""
        return (*self.x_shape[: len(self.x_shape) - len(self.grid)], self.n_sensors)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """``(..., *grid)`` -> ``(..., S)``."""
        check_floating("x", x)
        d = len(self.grid)
        if tuple(x.shape[-d:]) != self.grid:
            raise ValueError(f"x: expected trailing grid axes {self.grid}, got shape {tuple(x.shape)}")
        flat = x.reshape(*x.shape[:-d], -1)
        vals = flat[..., self.index.to(x.device).reshape(-1)].reshape(*flat.shape[:-1], *self.index.shape)
        return (vals * self.weight.to(x)).sum(-1)

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """``(..., S)`` -> ``(..., *grid)``, scattering with the interpolation weights."""
        check_floating("y", y)
        if y.shape[-1] != self.n_sensors:
            raise ValueError(f"y: expected last axis {self.n_sensors} (sensors), got shape {tuple(y.shape)}")
        contrib = (y[..., None] * self.weight.to(y)).reshape(*y.shape[:-1], -1)
        out = torch.zeros(*y.shape[:-1], math.prod(self.grid), dtype=y.dtype, device=y.device)
        out = out.index_add(-1, self.index.to(y.device).reshape(-1), contrib)
        return out.reshape(*y.shape[:-1], *self.grid)


def random_sensor_positions(n_sensors: int, length: float | Sequence[float] = 1.0, d: int = 1,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n_sensors, d)`` positions uniform on :math:`[0, L)^d` (float64), drawn from ``generator``."""
    if int(n_sensors) != n_sensors or n_sensors < 1:
        raise ValueError(f"n_sensors: expected a positive integer, got {n_sensors}")
    lengths = torch.tensor(_as_tuple(length, d, "length"), dtype=torch.float64)
    return rand((int(n_sensors), d), generator=generator, dtype=torch.float64) * lengths


class _Slicing(LinearFlag, LinearPhysics):
    """``y = x[..., slices]``; the adjoint puts ``y`` back into zeros of the input's shape."""

    def __init__(self, x_shape: tuple[int, ...], slices: dict[int, slice], **kwargs):
        super().__init__(**kwargs)
        self.x_shape = tuple(x_shape)
        self.slices = slices  # axis of one signal (batch axis excluded) -> slice

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one output of an input of shape ``x_shape``."""
        return tuple(len(range(*self.slices[ax].indices(n))) if ax in self.slices else n for ax, n in enumerate(self.x_shape))

    def _index(self, ndim: int):
        idx = [slice(None)] * ndim
        for ax, sl in self.slices.items():
            idx[ax + 1] = sl
        return tuple(idx)

    def _check(self, x: torch.Tensor) -> None:
        check_floating("x", x)
        ok = x.dim() == len(self.x_shape) + 1 and all(x.shape[ax + 1] == self.x_shape[ax] for ax in self.slices)
        if not ok:
            want = ", ".join(str(self.x_shape[a]) if a in self.slices else "*" for a in range(len(self.x_shape)))
            raise ValueError(f"{type(self).__name__}: expected input (B, {want}), got {tuple(x.shape)}")

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        self._check(x)
        return x[self._index(x.dim())]

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        check_floating("y", y)
        shape = list(y.shape)
        for ax, size in ((a, self.x_shape[a]) for a in self.slices):
            shape[ax + 1] = size
        out = torch.zeros(shape, dtype=y.dtype, device=y.device)
        idx = self._index(y.dim())
        expect = out[idx].shape
        if expect != y.shape:
            raise ValueError(f"{type(self).__name__}.A_adjoint: expected y of shape {tuple(expect)}, got {tuple(y.shape)}")
        out[idx] = y
        return out


class SpatialSubsample(_Slicing):
    """Keep every ``factor``-th grid point along each spatial axis: :math:`y = u[..., ::f, ::f]`.

    :param grid: spatial grid; ``n_frames``: set for trajectories ``(B, C, n_frames, *grid)``.
    :param offset: first kept index (default 0).

    >>> SpatialSubsample((8,), factor=4)(torch.arange(8.0).reshape(1, 1, 8))
    tensor([[[0., 4.]]])
    """

    def __init__(self, grid: Sequence[int], factor: int = 2, n_frames: int | None = None, offset: int = 0, **kwargs):
        grid = (int(grid),) if isinstance(grid, int) else tuple(int(n) for n in grid)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor: expected a positive integer (e.g. 2, 4, 8), got {factor}")
        if not 0 <= offset < factor:
            raise ValueError(f"offset: expected 0 <= offset < factor={factor}, got {offset}")
        x_shape = (1, n_frames, *grid) if n_frames else (1, *grid)
        first = len(x_shape) - len(grid)
        super().__init__(x_shape, {first + i: slice(offset, None, int(factor)) for i in range(len(grid))}, **kwargs)
        self.factor = int(factor)


class TemporalSubsample(_Slicing):
    """Keep every ``factor``-th frame of a trajectory ``(B, C, n_frames, *grid)``: :math:`y = u[:, :, ::f]`.

    >>> TemporalSubsample(n_frames=5, grid=(2,), factor=2)(torch.arange(10.0).reshape(1, 1, 5, 2)).shape
    torch.Size([1, 1, 3, 2])
    """

    def __init__(self, n_frames: int, grid: Sequence[int], factor: int = 2, offset: int = 0, **kwargs):
        grid = (int(grid),) if isinstance(grid, int) else tuple(int(n) for n in grid)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor: expected a positive integer (e.g. 2, 4, 8), got {factor}")
        if not 0 <= offset < factor:
            raise ValueError(f"offset: expected 0 <= offset < factor={factor}, got {offset}")
        if int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"n_frames: expected a positive integer, got {n_frames}")
        super().__init__((1, int(n_frames), *grid), {1: slice(offset, None, int(factor))}, **kwargs)
        self.factor = int(factor)


class TimeWindow(_Slicing):
    """Frames ``start <= k < stop`` of a trajectory ``(B, C, n_frames, *grid)``.

    >>> TimeWindow(n_frames=5, grid=(2,), start=1, stop=3)(torch.zeros(1, 1, 5, 2)).shape
    torch.Size([1, 1, 2, 2])
    """

    def __init__(self, n_frames: int, grid: Sequence[int], start: int = 0, stop: int | None = None, **kwargs):
        grid = (int(grid),) if isinstance(grid, int) else tuple(int(n) for n in grid)
        stop = n_frames if stop is None else stop
        if not 0 <= start < stop <= n_frames:
            raise ValueError(f"time window: expected 0 <= start < stop <= n_frames={n_frames}, got start={start}, stop={stop}")
        super().__init__((1, int(n_frames), *grid), {1: slice(int(start), int(stop))}, **kwargs)
        self.start, self.stop = int(start), int(stop)


def observe(solver: Physics, *observations: LinearPhysics, noise_model=None) -> Physics:
    """The composition :math:`y = O_k(\\cdots O_1(S(u_0)))` of a solver and observation operators.

    Returns a deepinv ``ComposedPhysics`` (``ComposedLinearPhysics`` if the solver is linear,
    e.g. :class:`~invdiff.operators.pde.heat.AdvectionDiffusion`) carrying the solver's ``x_shape``
    and, when given, ``noise_model``. Gradients flow through the solver by autograd.

    >>> from invdiff.operators.pde.heat import AdvectionDiffusion
    >>> S = AdvectionDiffusion((16,), n_frames=4)
    >>> A = observe(S, TemporalSubsample(4, (16,), 2), SpatialSubsample((16,), 4, n_frames=2))
    >>> A(torch.zeros(3, *A.x_shape)).shape
    torch.Size([3, 1, 2, 4])
    """
    if not observations:
        raise ValueError("observe: expected at least one observation operator")
    op = compose(solver, *observations)
    op.x_shape = tuple(solver.x_shape)
    op.linear = is_linear(op)
    shape = getattr(solver, "y_shape", None)
    for o in observations:  # the observations' output shapes (no solve)
        shape = None if shape is None else tuple(o.A(torch.zeros(1, *shape)).shape[1:])
    if shape is not None:
        op.y_shape = shape
    if noise_model is not None:
        op.noise_model = noise_model
    return op
