"""Common machinery of the PDE solvers: the saved-frame time grid and the Physics wrapper.

A solver maps an initial condition ``u0`` of shape ``(B, C, *grid)`` to the trajectory
``(B, C, n_frames, *grid)`` saved at :math:`t_k = k\\,T/(n_{\\rm frames}-1)`, ``k = 0..n_frames-1``
(the first frame is ``u0`` itself), or, with ``output="final"``, to the field at :math:`T`
only, ``(B, C, *grid)``. Channels are independent scalar fields (the PDEs are scalar).
Between two saved frames the solver takes ``substeps`` equal steps of size
:math:`\\Delta t = T / ((n_{\\rm frames}-1)\\,\\text{substeps}) \\le` ``dt_max``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from deepinv.physics import Physics

from invdiff.operators.common import LinearFlag, check_positive_finite
from invdiff.utils import check_floating, check_shape, progress


class PDESolver(LinearFlag, Physics):
    """Base class: initial condition -> trajectory (or final field), differentiable by autograd.

    Subclasses set ``self.grid`` (spatial shape) and implement ``_begin(u0) -> state``,
    ``_step(state, t, dt) -> state`` and ``_field(state) -> u``; ``dt`` is fixed per solver so
    that coefficient tables (e.g. ETDRK4's) are built once in ``_prepare(dt, dtype, device)``.
    """

    def __init__(self, grid: Sequence[int], t_final: float, n_frames: int, dt_max: float,
                 output: str = "trajectory", progress: bool = False, **kwargs):
        super().__init__(**kwargs)
        check_positive_finite("t_final", t_final)
        check_positive_finite("dt_max", dt_max)
        if int(n_frames) != n_frames or n_frames < 2:
            raise ValueError(f"n_frames: expected an integer >= 2 (the first frame is t=0), got {n_frames}")
        if output not in ("trajectory", "final"):
            raise ValueError(f"output: expected 'trajectory' or 'final', got {output!r}")
        self.grid = tuple(int(n) for n in grid)
        self.t_final = float(t_final)
        self.n_frames = int(n_frames)
        self.frame_dt = self.t_final / (self.n_frames - 1)
        self.substeps = max(1, math.ceil(self.frame_dt / dt_max - 1e-9))
        self.dt = self.frame_dt / self.substeps
        self.output = output
        self.progress = progress
        self.x_shape = (1, *self.grid)
        self._cache: dict = {}

    @property
    def times(self) -> torch.Tensor:
        """Saved times :math:`t_k` (float64), shape ``(n_frames,)``."""
        return torch.linspace(0.0, self.t_final, self.n_frames, dtype=torch.float64)

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one output (no batch axis)."""
        return (1, self.n_frames, *self.grid) if self.output == "trajectory" else (1, *self.grid)

    def _prepared(self, dtype: torch.dtype, device: torch.device):
        key = (dtype, str(device))
        if key not in self._cache:
            self._cache[key] = self._prepare(self.dt, dtype, device)
        return self._cache[key]

    def _prepare(self, dt: float, dtype: torch.dtype, device: torch.device):  # pragma: no cover - abstract
        return None

    def check_input(self, u0: torch.Tensor) -> None:
        """Shape/dtype check of an initial condition ``(B, C, *grid)``."""
        check_floating("u0", u0)
        check_shape("u0", u0, (None, None, *self.grid))

    def A(self, u0: torch.Tensor, **kwargs) -> torch.Tensor:
        """Solve from ``u0`` ``(B, C, *grid)``; return ``(B, C, n_frames, *grid)`` or ``(B, C, *grid)``."""
        self.check_input(u0)
        tables = self._prepared(u0.dtype, u0.device)
        state = self._begin(u0, tables)
        frames = [self._field(state, tables)] if self.output == "trajectory" else []
        t = 0.0
        steps = range((self.n_frames - 1) * self.substeps)
        for i in progress(steps, self.progress, desc=type(self).__name__):
            state = self._step(state, t, tables)
            t = (i + 1) * self.dt
            if self.output == "trajectory" and (i + 1) % self.substeps == 0:
                frames.append(self._field(state, tables))
        if self.output == "final":
            return self._field(state, tables)
        return torch.stack(frames, dim=2)
