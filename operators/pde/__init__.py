"""Differentiable PDE solvers and observation operators (``invdiff.operators.pde``).

Each solver is a deepinv ``Physics`` mapping an initial condition ``(B, C, *grid)`` to a trajectory
``(B, C, n_frames, *grid)`` (or the final field), differentiable by autograd, batched, following
the input's device and dtype:

* :class:`BurgersPeriodic` ("pde-burgers"): pseudo-spectral + ETDRK4; :func:`cole_hopf` exact solution.
* :class:`BurgersDirichlet` ("pde-burgers-dirichlet"): forced Burgers on [0, 1] (WDNO set-up).
* :class:`NavierStokes2D` ("pde-ns2d"): vorticity form on the torus; :func:`taylor_green`, :func:`velocity`.
* :class:`AdvectionDiffusion` ("pde-heat"): exact in Fourier space, a ``LinearPhysics``.

Observations ("pde-sensors", "pde-subsample-space", "pde-subsample-time", "pde-time-window") are
exact-adjoint ``LinearPhysics``; :func:`observe` composes them with a solver ("pde-observed").
"""
from __future__ import annotations

from .burgers import BurgersDirichlet, BurgersPeriodic, cole_hopf, gaussian_forcing
from .heat import AdvectionDiffusion
from .navier_stokes import NavierStokes2D, forcing_field, taylor_green, velocity
from .observations import (
    PointSensors,
    SpatialSubsample,
    TemporalSubsample,
    TimeWindow,
    observe,
    random_sensor_positions,
)

__all__ = [
    "AdvectionDiffusion",
    "BurgersDirichlet",
    "BurgersPeriodic",
    "NavierStokes2D",
    "PointSensors",
    "SpatialSubsample",
    "TemporalSubsample",
    "TimeWindow",
    "cole_hopf",
    "forcing_field",
    "gaussian_forcing",
    "observe",
    "random_sensor_positions",
    "taylor_green",
    "velocity",
]
