"""The registry factories of the PDE operators (``invdiff.operators.make("pde-...")``).

Each factory builds its operator from keyword arguments and routes the common arguments
(``sigma``, ``gain``, ``noise_model``, ``generator``, ``device``, ``dtype``) through
:func:`invdiff.operators.common.with_common`, as every invdiff operator does.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from deepinv.physics import Physics

from invdiff.operators.common import pop_common, with_common
from invdiff.operators.registry import register

from .burgers import BurgersDirichlet, BurgersPeriodic
from .heat import AdvectionDiffusion
from .navier_stokes import NavierStokes2D
from .observations import PointSensors, SpatialSubsample, TemporalSubsample, TimeWindow, observe, random_sensor_positions


@register("pde-burgers", "1D periodic viscous Burgers (pseudo-spectral, ETDRK4): u0 -> trajectory")
def _make_burgers(**kw) -> BurgersPeriodic:
    common = pop_common(kw)
    return with_common(BurgersPeriodic(**kw), **common)


@register("pde-burgers-dirichlet", "forced 1D Burgers on [0,1], u=0 at the ends (WDNO set-up): u0 -> trajectory")
def _make_burgers_dirichlet(**kw) -> BurgersDirichlet:
    common = pop_common(kw)
    return with_common(BurgersDirichlet(**kw), **common)


@register("pde-ns2d", "2D Navier-Stokes vorticity on the torus (pseudo-spectral, ETDRK4): w0 -> trajectory")
def _make_ns2d(**kw) -> NavierStokes2D:
    common = pop_common(kw)
    return with_common(NavierStokes2D(**kw), **common)


@register("pde-heat", "linear advection-diffusion on the 1D/2D torus, exact in Fourier space: u0 -> trajectory")
def _make_heat(**kw) -> AdvectionDiffusion:
    common = pop_common(kw)
    return with_common(AdvectionDiffusion(**kw), **common)


def _grid_of(solver) -> tuple[int, ...]:
    return tuple(solver.grid)


_SOLVERS = {"burgers": "pde-burgers", "burgers-dirichlet": "pde-burgers-dirichlet", "ns2d": "pde-ns2d", "heat": "pde-heat"}


@register("pde-sensors", "point sensors with linear interpolation on a 1D/2D PDE grid (fixed or random positions)")
def _make_sensors(grid: Sequence[int] = (128,), n_sensors: int = 16, positions=None, length=1.0, periodic: bool = True,
                  time_axis: bool = False, n_frames: int | None = None, seed: int = 0, **common) -> PointSensors:
    grid = (grid,) if isinstance(grid, int) else tuple(grid)
    if positions is None:
        g = torch.Generator().manual_seed(seed)
        positions = random_sensor_positions(n_sensors, length, len(grid), generator=g)
    return with_common(PointSensors(grid, positions, length, periodic, time_axis, n_frames), **common)


@register("pde-subsample-space", "spatial sub-sampling of a PDE field/trajectory by a factor (2, 4, 8)")
def _make_subsample_space(grid: Sequence[int] = (128,), factor: int = 2, n_frames: int | None = None, **common) -> SpatialSubsample:
    return with_common(SpatialSubsample(grid, factor, n_frames), **common)


@register("pde-subsample-time", "temporal sub-sampling of a PDE trajectory by a factor (2, 4, 8)")
def _make_subsample_time(n_frames: int = 11, grid: Sequence[int] = (128,), factor: int = 2, **common) -> TemporalSubsample:
    return with_common(TemporalSubsample(n_frames, grid, factor), **common)


@register("pde-time-window", "frames start <= k < stop of a PDE trajectory")
def _make_time_window(n_frames: int = 11, grid: Sequence[int] = (128,), start: int = 0, stop: int | None = None,
                      **common) -> TimeWindow:
    return with_common(TimeWindow(n_frames, grid, start, stop), **common)


@register("pde-observed", "a PDE solver composed with observations, e.g. sparse sensors of a Burgers trajectory")
def _make_observed(solver: str = "burgers", observation: str = "sensors", solver_kwargs: dict | None = None,
                   factor: int = 2, n_sensors: int = 16, seed: int = 0, start: int = 0, stop: int | None = None,
                   **common) -> Physics:
    """``observation o solver``; ``observation`` in sensors | subsample-space | subsample-time | time-window.
    The common arguments (noise, generator, device, dtype) apply to the composition."""
    from invdiff.operators.registry import make

    if solver not in _SOLVERS:
        raise ValueError(f"solver: expected one of {sorted(_SOLVERS)}, got {solver!r}")
    S = make(_SOLVERS[solver], **(solver_kwargs or {}))
    grid = _grid_of(S)
    traj = getattr(S, "output", "trajectory") == "trajectory"
    nf = S.n_frames if traj else None
    lengths = getattr(S, "lengths", None) or (getattr(S, "length", 1.0),) * len(grid)
    if observation == "sensors":
        O = _make_sensors(grid, n_sensors, None, lengths, periodic=solver != "burgers-dirichlet",
                          time_axis=traj, n_frames=nf, seed=seed)
    elif observation == "subsample-space":
        O = SpatialSubsample(grid, factor, nf)
    elif observation in ("subsample-time", "time-window"):
        if not traj:
            raise ValueError(f"observation {observation!r} needs a trajectory output (solver output='trajectory')")
        O = TemporalSubsample(nf, grid, factor) if observation == "subsample-time" else TimeWindow(nf, grid, start, stop)
    else:
        raise ValueError(f"observation: expected sensors, subsample-space, subsample-time or time-window, got {observation!r}")
    return with_common(observe(S, O), **common)
