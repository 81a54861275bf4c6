"""PDE solvers against exact solutions, convergence orders, conservation laws and gradcheck."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invdiff import operators
from invdiff.operators.pde import (
    AdvectionDiffusion,
    BurgersDirichlet,
    BurgersPeriodic,
    NavierStokes2D,
    cole_hopf,
    gaussian_forcing,
    taylor_green,
    velocity,
)

F64 = torch.float64


def observed_order(errors: list[float], ratio: float = 2.0) -> list[float]:
    return [math.log(e0 / e1, ratio) for e0, e1 in zip(errors, errors[1:])]


# ---------------------------------------------------------------- periodic Burgers (Cole-Hopf)


def test_burgers_periodic_matches_cole_hopf():
    nu, n = 0.1, 64
    solver = BurgersPeriodic(n=n, nu=nu, length=2 * math.pi, t_final=2.0, n_frames=5, dt_max=0.01)
    x = solver.x
    traj = solver(cole_hopf(x, 0.0, nu).reshape(1, 1, n))
    exact = torch.stack([cole_hopf(x, float(t), nu) for t in solver.times])
    assert traj.shape == (1, 1, 5, n)
    assert (traj[0, 0] - exact).abs().max() < 1e-6


def test_burgers_periodic_wavenumber_and_length():
    # k = 2 on the torus of length pi (u periodic with period pi), so a non-default length is exercised
    nu, n, L = 0.05, 64, math.pi
    solver = BurgersPeriodic(n=n, nu=nu, length=L, t_final=1.0, n_frames=2, dt_max=0.01, output="final")
    x = solver.x
    out = solver(cole_hopf(x, 0.0, nu, k=2.0, eps=0.7).reshape(1, 1, n))
    assert (out[0, 0] - cole_hopf(x, 1.0, nu, k=2.0, eps=0.7)).abs().max() < 1e-6


def test_burgers_etdrk4_is_fourth_order_in_time():
    nu, n, T = 0.1, 64, 2.0
    x = torch.arange(n, dtype=F64) * 2 * math.pi / n
    u0 = cole_hopf(x, 0.0, nu, eps=0.9).reshape(1, 1, n)
    exact = cole_hopf(x, T, nu, eps=0.9)
    errs = []
    for dt in (0.5, 0.25, 0.125):
        s = BurgersPeriodic(n=n, nu=nu, length=2 * math.pi, t_final=T, n_frames=2, dt_max=dt, output="final")
        errs.append((s(u0)[0, 0] - exact).abs().max().item())
    orders = observed_order(errs)
    assert all(3.5 < p < 4.6 for p in orders), (errs, orders)


def test_burgers_periodic_conserves_mean():
    n = 64
    g = torch.Generator().manual_seed(0)
    x = torch.arange(n, dtype=F64) / n
    coef = torch.randn(3, 4, generator=g, dtype=F64)
    u0 = sum(coef[:, j, None] * torch.sin(2 * math.pi * (j + 1) * x + j) for j in range(4)) + 0.3
    u0 = u0.reshape(3, 1, n)
    traj = BurgersPeriodic(n=n, nu=0.02, length=1.0, t_final=0.2, n_frames=6, dt_max=2e-3)(u0)
    means = traj.mean(-1)
    assert (means - u0.mean(-1, keepdim=True)).abs().max() < 1e-13


# ---------------------------------------------------------------- forced Dirichlet Burgers


def test_gaussian_forcing_matches_direct_sum():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(2, 8, 5, generator=g, dtype=F64) * torch.tensor([3.0, 1, 0.15, 1, 0.2], dtype=F64) + torch.tensor([-1.5, 0, 0.05, 0, 0.05], dtype=F64)
    x = torch.linspace(0, 1, 17, dtype=F64)
    ts = torch.tensor([0.0, 0.3, 0.9], dtype=F64)
    P, X = p.numpy(), x.numpy()
    ref = np.zeros((2, 3, 17))
    for b in range(2):
        for it, t in enumerate(ts.tolist()):
            for a, c, s, tau, r in P[b]:
                ref[b, it] += a * np.exp(-((X - c) ** 2) / (2 * s * s) - (t - tau) ** 2 / (2 * r * r))
    np.testing.assert_allclose(gaussian_forcing(p, ts, x)[:, 0].numpy(), ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gaussian_forcing(p, 0.3, x)[:, 0].numpy(), ref[:, 1], rtol=1e-12, atol=1e-14)


def _dirichlet_final(n: int) -> torch.Tensor:
    s = BurgersDirichlet(n=n, nu=0.01, t_final=0.25, n_frames=2, output="final")
    x = s.x
    u0 = (torch.sin(math.pi * x) + 0.5 * torch.sin(3 * math.pi * x)).reshape(1, 1, n)
    f = torch.tensor([[[1.0, 0.3, 0.1, 0.1, 0.1], [-1.0, 0.7, 0.1, 0.2, 0.1]]], dtype=F64)
    return s(u0, forcing=f)[0, 0]


def test_burgers_dirichlet_converges_at_second_order():
    ref = _dirichlet_final(513)
    errs = [(_dirichlet_final(n) - ref[:: 512 // (n - 1)]).abs().max().item() for n in (33, 65, 129)]
    orders = observed_order(errs)
    assert all(1.8 < p < 2.4 for p in orders), (errs, orders)


def test_burgers_dirichlet_boundary_and_energy_decay():
    n = 65
    s = BurgersDirichlet(n=n, nu=0.01, t_final=1.0, n_frames=11)
    x = s.x
    u0 = (1.5 * torch.exp(-((x - 0.3) ** 2) / 0.01) - torch.exp(-((x - 0.7) ** 2) / 0.02)).reshape(1, 1, n)
    traj = s(u0)[0, 0]
    assert torch.all(traj[1:, 0] == 0) and torch.all(traj[1:, -1] == 0)
    energy = (traj[:, 1:-1] ** 2).sum(-1)
    # unforced: d/dt sum u^2 = -2 nu |grad u|^2 < 0 (the skew-symmetric advection adds nothing)
    assert torch.all(energy[1:] < energy[:-1])
    assert torch.isfinite(traj).all()


def test_burgers_dirichlet_forcing_batch_checks():
    s = BurgersDirichlet(n=17, t_final=0.1, n_frames=2)
    with pytest.raises(ValueError, match="forcing"):
        s(torch.zeros(3, 1, 17), forcing=torch.zeros(2, 8, 5))
    with pytest.raises(ValueError, match="forcing"):
        s(torch.zeros(3, 1, 17), forcing=torch.zeros(3, 8, 4))


# ---------------------------------------------------------------- Navier-Stokes


def test_taylor_green_decay():
    nu, n = 0.05, 32
    s = NavierStokes2D(n=n, nu=nu, length=2 * math.pi, forcing=None, t_final=2.0, n_frames=5)
    w = s(taylor_green((n, n), 0.0, nu, m=2).reshape(1, 1, n, n))
    for k, t in enumerate(s.times.tolist()):
        assert (w[0, 0, k] - taylor_green((n, n), t, nu, m=2)).abs().max() < 1e-6


def test_velocity_is_divergence_free_and_has_the_right_curl():
    # independent numpy spectral derivatives (full FFT) of the velocity field
    g = torch.Generator().manual_seed(2)
    n, L = 32, 1.0
    w = torch.randn(2, n, n, generator=g, dtype=F64)
    keep = (torch.fft.fftfreq(n).abs() * n < n / 2)[:, None] & (torch.fft.rfftfreq(n) * n < n / 2)[None, :]
    keep[0, 0] = False  # zero mean, no Nyquist content (odd derivatives of Nyquist modes are set to 0)
    w = torch.fft.irfft2(torch.fft.rfft2(w) * keep, s=(n, n))
    u, v = velocity(w, (L, L))
    k = 2 * np.pi * np.fft.fftfreq(n, d=L / n)
    KX, KY = np.meshgrid(k, k, indexing="ij")

    def d(f, K):
        return np.real(np.fft.ifft2(1j * K * np.fft.fft2(f)))

    un, vn = u.numpy(), v.numpy()
    div = d(un, KX) + d(vn, KY)
    assert np.abs(div).max() < 1e-13 * np.abs(w.numpy()).max()
    curl = d(vn, KX) - d(un, KY)
    np.testing.assert_allclose(curl, w.numpy(), atol=1e-12 * np.abs(w.numpy()).max())


def test_kolmogorov_laminar_state():
    # from rest, f = -F k cos(ky) drives omega(t) = f / (nu k^2) (1 - exp(-nu k^2 t)) (nonlinear term 0)
    nu, m, n = 0.1, 2, 16
    s = NavierStokes2D(n=n, nu=nu, length=1.0, forcing="kolmogorov", forcing_wavenumber=m, t_final=0.5, n_frames=3)
    w = s(torch.zeros(1, 1, n, n, dtype=F64))
    k = 2 * math.pi * m
    Y = (torch.arange(n, dtype=F64) / n)[None, :].expand(n, n)
    for j, t in enumerate(s.times.tolist()):
        exact = -k * torch.cos(k * Y) / (nu * k * k) * (1 - math.exp(-nu * k * k * t))
        assert (w[0, 0, j] - exact).abs().max() < 1e-12


def _smooth_field(n: int, kmax: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1, 1, n, n, generator=g, dtype=F64)
    m1 = (torch.fft.fftfreq(n).abs() * n <= kmax)[:, None]
    m2 = (torch.fft.rfftfreq(n) * n <= kmax)[None, :]
    w = torch.fft.irfft2(torch.fft.rfft2(w) * (m1 & m2), s=(n, n))
    return 4 * w / w.abs().max()


def test_ns_etdrk4_is_fourth_order_in_time():
    w0 = _smooth_field(32, 4, 0)
    ref = NavierStokes2D(n=32, nu=1e-2, t_final=0.5, n_frames=2, dt_max=0.5 / 128, output="final")(w0)
    errs = [(NavierStokes2D(n=32, nu=1e-2, t_final=0.5, n_frames=2, dt_max=0.5 / m, output="final")(w0) - ref).abs().max().item()
            for m in (8, 16, 32)]
    orders = observed_order(errs)
    assert all(3.6 < p < 4.5 for p in orders), (errs, orders)


def test_ns_inviscid_conserves_energy_and_enstrophy():
    # the 2/3-truncated Galerkin Euler equations conserve both invariants; ETDRK4 errors are O(dt^4)
    n = 32
    w0 = _smooth_field(n, 5, 3)
    w0 = w0 - w0.mean()
    w = NavierStokes2D(n=n, nu=0.0, forcing=None, t_final=0.5, n_frames=3, dt_max=2e-3)(w0)[0, 0]
    u, v = velocity(w)
    energy = (u**2 + v**2).mean((-2, -1))
    enstrophy = (w**2).mean((-2, -1))
    assert (energy / energy[0] - 1).abs().max() < 1e-7
    assert (enstrophy / enstrophy[0] - 1).abs().max() < 1e-7
    assert (w[-1] - w[0]).abs().max() > 0.1  # the flow did evolve


# ---------------------------------------------------------------- advection-diffusion


@pytest.mark.parametrize("grid", [(32,), (16, 24)])
def test_heat_exact_fourier_decay_and_shift(grid):
    kappa, c, L, T = 0.02, (0.3, -0.7)[: len(grid)], (1.0, 2.0)[: len(grid)], 1.5
    op = AdvectionDiffusion(grid, kappa=kappa, velocity=c, length=L, t_final=T, n_frames=4)
    xs = torch.meshgrid(*[torch.arange(n, dtype=F64) * Li / n for n, Li in zip(grid, L)], indexing="ij")
    ms = (3, 2)[: len(grid)]

    def exact(t):
        phase = sum(2 * math.pi * m / Li * (xi - ci * t) for m, Li, xi, ci in zip(ms, L, xs, c))
        k2 = sum((2 * math.pi * m / Li) ** 2 for m, Li in zip(ms, L))
        return math.exp(-kappa * k2 * t) * torch.cos(phase + 0.4)

    out = op(exact(0.0).reshape(1, 1, *grid))
    for j, t in enumerate(op.times.tolist()):
        assert (out[0, 0, j] - exact(t)).abs().max() < 1e-12


def test_heat_pure_advection_is_a_shift():
    n = 32
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 1, n, generator=g, dtype=F64)
    x_hat = torch.fft.rfft(x)
    x_hat[..., n // 2] = 0  # no Nyquist content: the shift is then exact
    x = torch.fft.irfft(x_hat, n=n)
    op = AdvectionDiffusion((n,), kappa=0.0, velocity=5 / n, length=1.0, t_final=1.0, output="final")
    assert (op(x) - torch.roll(x, 5, dims=-1)).abs().max() < 1e-13


@pytest.mark.parametrize("output", ["trajectory", "final"])
@pytest.mark.parametrize("grid", [(32,), (12, 10)])
def test_heat_adjoint(grid, output):
    op = AdvectionDiffusion(grid, kappa=0.01, velocity=(0.4, 0.1)[: len(grid)], t_final=1.0, n_frames=5, output=output)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 1, *grid, generator=g)
    y = torch.randn(op(x).shape, generator=g)
    lhs, rhs = (op(x) * y).sum(), (x * op.A_adjoint(y)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


# ---------------------------------------------------------------- gradients, registry, errors


@pytest.mark.parametrize(
    "make",
    [
        lambda: BurgersPeriodic(n=8, nu=0.1, length=2 * math.pi, t_final=0.2, n_frames=3, dt_max=0.05),
        lambda: BurgersDirichlet(n=9, nu=0.1, t_final=0.05, n_frames=2, forcing=torch.tensor([[[1.0, 0.5, 0.2, 0.0, 0.1]]], dtype=F64)),
        lambda: NavierStokes2D(n=6, nu=0.05, t_final=0.1, n_frames=2, dt_max=0.05),
    ],
    ids=["burgers", "burgers-dirichlet", "ns2d"],
)
def test_solver_gradcheck(make):
    s = make()
    g = torch.Generator().manual_seed(6)
    u0 = torch.randn(2, *s.x_shape, generator=g, dtype=F64, requires_grad=True)
    # fast mode: compares random projections v^T J u of the analytical and finite-difference Jacobians
    assert torch.autograd.gradcheck(lambda u: s(u), (u0,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_dirichlet_gradcheck_wrt_forcing_parameters():
    # the hand-written RK4 adjoint also returns gradients of the forcing values; a batch-1 forcing
    # broadcast over 2 samples and 2 channels checks the reduction over broadcast axes
    s = BurgersDirichlet(n=9, nu=0.1, t_final=0.05, n_frames=3)
    p = torch.tensor([[[1.0, 0.5, 0.2, 0.0, 0.1], [0.5, 0.2, 0.1, 0.03, 0.1]]], dtype=F64, requires_grad=True)
    u0 = torch.randn(2, 2, 9, dtype=F64, generator=torch.Generator().manual_seed(11), requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, q: s(u, forcing=q), (u0, p), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,kw", [
    ("pde-burgers", dict(n=16, t_final=0.01, n_frames=3)),
    ("pde-burgers-dirichlet", dict(n=16, t_final=0.01, n_frames=3)),
    ("pde-ns2d", dict(n=8, t_final=0.05, n_frames=3)),
    ("pde-heat", dict(grid=(8, 8), n_frames=3)),
])
def test_registry_shapes_and_dtypes(name, kw):
    op = operators.make(name, **kw)
    for dtype in (torch.float32, torch.float64):
        y = op(torch.zeros(2, *op.x_shape, dtype=dtype))
        assert y.dtype == dtype
        assert y.shape == (2, 1, 3, *op.x_shape[1:])


def test_bad_inputs_raise_before_work():
    s = BurgersPeriodic(n=16, t_final=0.1, n_frames=2)
    with pytest.raises(ValueError, match=r"expected shape \(\*, \*, 16\)"):
        s(torch.zeros(2, 1, 15))
    with pytest.raises(TypeError, match="floating"):
        s(torch.zeros(2, 1, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="nu"):
        BurgersPeriodic(nu=-1.0)
    with pytest.raises(ValueError, match="n_frames"):
        NavierStokes2D(n=8, n_frames=1)
    with pytest.raises(ValueError, match="forcing"):
        NavierStokes2D(n=8, forcing="turbulent")
    with pytest.raises(ValueError, match="output"):
        AdvectionDiffusion((8,), output="all")
