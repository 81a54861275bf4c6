"""Observation operators: exact adjoints, interpolation against scipy, slicing against numpy, compositions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import RegularGridInterpolator

from invdiff import operators
from invdiff.operators.pde import (
    AdvectionDiffusion,
    BurgersPeriodic,
    PointSensors,
    SpatialSubsample,
    TemporalSubsample,
    TimeWindow,
    observe,
    random_sensor_positions,
)

F64 = torch.float64


def adjoint_gap(op, x_shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, *x_shape, generator=g, dtype=dtype)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=g, dtype=dtype)
    lhs = (ax * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    return (abs(lhs - rhs) / abs(lhs)).item()


OPERATORS = {
    "sensors-1d-periodic": lambda: PointSensors((32,), random_sensor_positions(7, 2.0, 1, torch.Generator().manual_seed(0)), length=2.0),
    "sensors-1d-dirichlet": lambda: PointSensors((33,), torch.tensor([[0.0], [0.31], [1.0], [0.999]]), length=1.0, periodic=False),
    "sensors-2d": lambda: PointSensors((12, 10), random_sensor_positions(9, (1.0, 2.0), 2, torch.Generator().manual_seed(1)), length=(1.0, 2.0)),
    "sensors-2d-traj": lambda: PointSensors((12, 10), random_sensor_positions(5, 1.0, 2, torch.Generator().manual_seed(2)), time_axis=True, n_frames=4),
    "space-2": lambda: SpatialSubsample((32,), 2),
    "space-4-2d-traj": lambda: SpatialSubsample((16, 16), 4, n_frames=3),
    "space-8-offset": lambda: SpatialSubsample((32,), 8, offset=3),
    "time-2": lambda: TemporalSubsample(9, (8,), 2),
    "time-4": lambda: TemporalSubsample(9, (4, 4), 4),
    "time-8": lambda: TemporalSubsample(17, (8,), 8, offset=1),
    "window": lambda: TimeWindow(10, (8,), 2, 7),
}


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_observation_adjoint(name):
    op = OPERATORS[name]()
    assert adjoint_gap(op, op.x_shape) < 1e-5


def test_sensors_match_scipy_linear_interpolation_1d_and_2d():
    g = torch.Generator().manual_seed(3)
    # 1D, non-periodic nodes x_j = j / (n - 1)
    n = 17
    u = torch.randn(n, generator=g, dtype=F64)
    pos = torch.rand(20, 1, generator=g, dtype=F64)
    op = PointSensors((n,), pos, periodic=False)
    ref = np.interp(pos[:, 0].numpy(), np.linspace(0, 1, n), u.numpy())
    np.testing.assert_allclose(op(u.reshape(1, 1, n))[0, 0].numpy(), ref, rtol=0, atol=1e-13)
    # 2D periodic grid x_i = i L / n: extend by the wrap-around row/column, then scipy bilinear
    nx, ny, Lx, Ly = 8, 6, 1.0, 2.0
    u2 = torch.randn(nx, ny, generator=g, dtype=F64)
    pos2 = random_sensor_positions(25, (Lx, Ly), 2, generator=g)
    op2 = PointSensors((nx, ny), pos2, length=(Lx, Ly))
    ext = np.pad(u2.numpy(), ((0, 1), (0, 1)), mode="wrap")
    interp = RegularGridInterpolator((np.arange(nx + 1) * Lx / nx, np.arange(ny + 1) * Ly / ny), ext, method="linear")
    np.testing.assert_allclose(op2(u2.reshape(1, 1, nx, ny))[0, 0].numpy(), interp(pos2.numpy()), rtol=0, atol=1e-13)


def test_sensors_on_nodes_read_node_values_and_trajectories():
    u = torch.randn(2, 1, 4, 16, generator=torch.Generator().manual_seed(4))
    pos = torch.tensor([[0.0], [0.25], [0.5625]])
    op = PointSensors((16,), pos, time_axis=True, n_frames=4)
    assert torch.equal(op(u), u[..., [0, 4, 9]])
    assert op.x_shape == (1, 4, 16)


def test_slicing_matches_numpy():
    x = torch.randn(2, 1, 9, 16, 16, generator=torch.Generator().manual_seed(5))
    xn = x.numpy()
    np.testing.assert_array_equal(SpatialSubsample((16, 16), 4, n_frames=9)(x).numpy(), xn[..., ::4, ::4])
    np.testing.assert_array_equal(TemporalSubsample(9, (16, 16), 8)(x).numpy(), xn[:, :, ::8])
    np.testing.assert_array_equal(TimeWindow(9, (16, 16), 3, 6)(x).numpy(), xn[:, :, 3:6])
    y = TemporalSubsample(9, (16, 16), 4).A_adjoint(x[:, :, ::4])
    ref = np.zeros_like(xn)
    ref[:, :, ::4] = xn[:, :, ::4]
    np.testing.assert_array_equal(y.numpy(), ref)


def test_random_positions_are_reproducible_and_in_range():
    a = random_sensor_positions(50, (1.0, 3.0), 2, torch.Generator().manual_seed(7))
    b = random_sensor_positions(50, (1.0, 3.0), 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert a.shape == (50, 2) and (a >= 0).all() and (a[:, 0] < 1).all() and (a[:, 1] < 3).all()


def test_observation_errors():
    with pytest.raises(ValueError, match="positions"):
        PointSensors((8,), torch.tensor([[1.5]]), length=1.0)
    with pytest.raises(ValueError, match=r"positions: expected shape \(S, 2\)"):
        PointSensors((8, 8), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="factor"):
        SpatialSubsample((8,), 0)
    with pytest.raises(ValueError, match="time window"):
        TimeWindow(5, (8,), 3, 2)
    with pytest.raises(ValueError, match="trailing grid"):
        PointSensors((8,), torch.tensor([[0.5]]))(torch.zeros(1, 1, 9))
    with pytest.raises(ValueError, match="TemporalSubsample"):
        TemporalSubsample(5, (8,), 2)(torch.zeros(1, 1, 4, 8))


def test_composition_with_linear_solver_is_exact_adjoint():
    S = AdvectionDiffusion((16, 16), kappa=0.01, velocity=(0.2, 0.1), n_frames=9)
    A = observe(S, TemporalSubsample(9, (16, 16), 4), PointSensors((16, 16), random_sensor_positions(6, 1.0, 2), time_axis=True, n_frames=3))
    assert A.x_shape == (1, 16, 16)
    assert A(torch.zeros(2, *A.x_shape)).shape == (2, 1, 3, 6)
    assert adjoint_gap(A, A.x_shape) < 1e-5


def test_composition_with_nonlinear_solver_gradcheck():
    S = BurgersPeriodic(n=8, nu=0.1, length=2 * math.pi, t_final=0.2, n_frames=3, dt_max=0.1)
    A = observe(S, PointSensors((8,), torch.tensor([[0.3], [2.9], [5.0]], dtype=F64), length=2 * math.pi, time_axis=True, n_frames=3))
    u0 = torch.randn(2, *A.x_shape, dtype=F64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: A(u), (u0,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("solver,observation", [
    ("burgers", "sensors"), ("burgers-dirichlet", "subsample-space"), ("ns2d", "subsample-time"),
    ("heat", "time-window"), ("ns2d", "sensors"),
])
def test_registry_observed(solver, observation):
    small = {"burgers": dict(n=16, t_final=0.01, n_frames=5), "burgers-dirichlet": dict(n=17, t_final=0.01, n_frames=5),
             "ns2d": dict(n=8, t_final=0.05, n_frames=5), "heat": dict(grid=(8,), n_frames=5)}[solver]
    A = operators.make("pde-observed", solver=solver, observation=observation, solver_kwargs=small, n_sensors=3, start=1, stop=3)
    y = A(torch.zeros(2, *A.x_shape))
    assert y.shape[:2] == (2, 1)
    assert "pde-sensors" in operators.available()


def test_docstring_examples():
    import doctest
    import importlib

    for name in ("spectral", "burgers", "navier_stokes", "heat", "observations"):
        mod = importlib.import_module(f"invdiff.operators.pde.{name}")
        res = doctest.testmod(mod, extraglobs={"torch": torch, "math": math}, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, f"{name}: {res.failed} doctest failures"
        assert res.attempted > 0, name
