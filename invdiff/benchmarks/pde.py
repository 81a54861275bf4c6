"""`invdiff bench pde`: PDE solvers: throughput, accuracy vs exact solutions, gradient cost.

Three tables, all measured in the same run on ``device``:

* ``pde_throughput``: trajectories per second of each solver at two resolutions (batch of B),
  side by side with SciPy ``solve_ivp`` (RK45, rtol 1e-6) on the *same* semi-discretisation in
  NumPy, one trajectory at a time (what a user would otherwise write), with the speed ratio and
  the max difference between the two.
* ``pde_accuracy``: max error against exact solutions vs resolution and time step: periodic
  Burgers vs Cole-Hopf (ETDRK4), Taylor-Green vortex, Kolmogorov laminar flow, heat/advection vs
  the Fourier solution; and observed convergence orders (Dirichlet Burgers in space vs a fine
  reference; NS2D ETDRK4 in time vs a fine-step reference).
* ``pde_gradient``: time of one forward solve and of one forward + backward (the gradient of
  :math:`\\langle w, S(u_0)\\rangle` w.r.t. :math:`u_0` by autograd), and their ratio (target <= 3).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from invdiff.operators.pde import (
    AdvectionDiffusion,
    BurgersDirichlet,
    BurgersPeriodic,
    NavierStokes2D,
    cole_hopf,
    taylor_green,
)


def _timeit(fn, device, repeats: int, min_total: float = 0.2) -> float:
    """Smallest wall time of one call over at least ``repeats`` calls and ``min_total`` seconds.

    The minimum (as :mod:`timeit` recommends) is the least disturbed by other load on a shared machine.
    """
    fn()  # warm-up (coefficient tables, allocator)
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_total:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _solvers(quick: bool) -> list[tuple[str, str, callable]]:
    """(name, resolution, factory) with a common short horizon so timings are comparable."""
    T, F = (0.5, 6) if quick else (1.0, 11)
    res1 = (64, 128) if quick else (128, 256)
    res2 = (32, 64) if quick else (64, 128)
    out = []
    for n in res1:
        out.append(("burgers (periodic, ETDRK4)", str(n), lambda n=n: BurgersPeriodic(n=n, nu=0.01, t_final=T, n_frames=F, dt_max=1e-3)))
    for n in res1:
        out.append(("burgers (Dirichlet, RK4 FD)", str(n), lambda n=n: BurgersDirichlet(n=n, nu=0.01, t_final=T, n_frames=F)))
    for n in res2:
        out.append(("ns2d (ETDRK4)", f"{n}x{n}", lambda n=n: NavierStokes2D(n=n, nu=1e-3, t_final=T, n_frames=F)))
    for n in res1:
        out.append(("heat 1D (exact)", str(n), lambda n=n: AdvectionDiffusion((n,), kappa=0.01, velocity=0.5, t_final=T, n_frames=F)))
    for n in res2:
        out.append(("heat 2D (exact)", f"{n}x{n}", lambda n=n: AdvectionDiffusion((n, n), kappa=0.01, velocity=(0.5, 0.25), t_final=T, n_frames=F)))
    return out


def _initial(solver, batch: int, device, dtype, seed: int = 0) -> torch.Tensor:
    from invdiff.datasets.pde import burgers_initial_condition, burgers_u0_params, gaussian_random_field

    g = torch.Generator().manual_seed(seed)
    if isinstance(solver, BurgersDirichlet):
        p = torch.stack([burgers_u0_params(g) for _ in range(batch)])
        u0 = burgers_initial_condition(p, solver.x)
    else:
        grid = solver.grid
        u0 = gaussian_random_field(grid, 2.5, 7.0, generator=g, n=batch)[:, None]
        if len(grid) == 1:
            u0 = u0 / u0.abs().amax(-1, keepdim=True)  # O(1) amplitude for Burgers
    return u0.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- SciPy baselines


def _scipy_burgers_dirichlet(solver: BurgersDirichlet, u0: np.ndarray) -> np.ndarray:
    from scipy.integrate import solve_ivp

    h, nu = solver.h, solver.nu

    def rhs(t, ui):
        u = np.concatenate([[0.0], ui, [0.0]])
        um, uc, up = u[:-2], u[1:-1], u[2:]
        return -(up * up - um * um + uc * (up - um)) / (6 * h) + nu * (up - 2 * uc + um) / (h * h)

    sol = solve_ivp(rhs, (0, solver.t_final), u0[1:-1], t_eval=solver.times.numpy(), rtol=1e-6, atol=1e-9)
    return np.pad(sol.y.T, ((0, 0), (1, 1)))


def _scipy_burgers_periodic(solver: BurgersPeriodic, u0: np.ndarray) -> np.ndarray:
    from scipy.integrate import solve_ivp

    n = solver.grid[0]
    m = np.fft.rfftfreq(n, 1.0 / n)
    k = 2 * np.pi * m / solver.length
    kd = k.copy()
    if n % 2 == 0:
        kd[-1] = 0
    mask = m < n / 3
    nu = solver.nu

    def rhs(t, z):
        v = z[: n // 2 + 1] + 1j * z[n // 2 + 1:]
        dv = -nu * k**2 * v - 0.5j * kd * mask * np.fft.rfft(np.fft.irfft(v, n) ** 2)
        return np.concatenate([dv.real, dv.imag])

    v0 = np.fft.rfft(u0)
    sol = solve_ivp(rhs, (0, solver.t_final), np.concatenate([v0.real, v0.imag]), t_eval=solver.times.numpy(),
                    rtol=1e-6, atol=1e-9)
    v = sol.y[: n // 2 + 1] + 1j * sol.y[n // 2 + 1:]
    return np.fft.irfft(v.T, n)


def throughput(quick: bool, device: torch.device) -> list[dict]:
    batch = 8 if quick else 32
    rows = []
    for name, res, make in _solvers(quick):
        solver = make()
        u0 = _initial(solver, batch, device, torch.float32)
        with torch.no_grad():
            t = _timeit(lambda: solver(u0), device, 2 if quick else 3)
        row = dict(solver=name, resolution=res, device=device.type, batch=batch, steps=(solver.n_frames - 1) * getattr(solver, "substeps", 1),
                   traj_per_s=batch / t)
        baseline = {BurgersDirichlet: _scipy_burgers_dirichlet, BurgersPeriodic: _scipy_burgers_periodic}.get(type(solver))
        if baseline is not None:
            u64 = u0[:2].double().cpu().numpy()[:, 0]
            t0 = time.perf_counter()
            ref = np.stack([baseline(solver, u) for u in u64])
            t_scipy = (time.perf_counter() - t0) / len(u64)
            with torch.no_grad():
                ours = solver(u0[:2].double().cpu())[:, 0].numpy()
            row.update(scipy_traj_per_s=1 / t_scipy, speedup_vs_scipy=(batch / t) * t_scipy,
                       max_diff_vs_scipy=float(np.abs(ours - ref).max()))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- accuracy


def accuracy(quick: bool) -> list[dict]:
    rows = []
    f64 = torch.float64
    nu = 0.1
    for n in (16, 32, 64):
        for dt in (0.2, 0.1, 0.05) if quick else (0.4, 0.2, 0.1, 0.05, 0.025):
            s = BurgersPeriodic(n=n, nu=nu, length=2 * math.pi, t_final=2.0, n_frames=2, dt_max=dt, output="final")
            err = (s(cole_hopf(s.x, 0.0, nu, eps=0.9).reshape(1, 1, n))[0, 0] - cole_hopf(s.x, 2.0, nu, eps=0.9)).abs().max()
            rows.append(dict(case="burgers periodic vs Cole-Hopf (eps=0.9, nu=0.1, T=2)", resolution=str(n), dt=dt, max_error=float(err)))
    for n in (16, 32):
        s = NavierStokes2D(n=n, nu=0.05, length=2 * math.pi, forcing=None, t_final=2.0, n_frames=2, output="final")
        err = (s(taylor_green((n, n), 0.0, 0.05, m=2).reshape(1, 1, n, n))[0, 0] - taylor_green((n, n), 2.0, 0.05, m=2)).abs().max()
        rows.append(dict(case="ns2d Taylor-Green (m=2, nu=0.05, T=2)", resolution=f"{n}x{n}", dt=s.dt, max_error=float(err)))
        s = NavierStokes2D(n=n, nu=0.1, forcing="kolmogorov", forcing_wavenumber=2, t_final=0.5, n_frames=2, output="final")
        k = 4 * math.pi
        Y = (torch.arange(n, dtype=f64) / n)[None, :]
        exact = -torch.cos(k * Y) / (0.1 * k) * (1 - math.exp(-0.1 * k * k * 0.5))
        err = (s(torch.zeros(1, 1, n, n, dtype=f64))[0, 0] - exact).abs().max()
        rows.append(dict(case="ns2d Kolmogorov laminar (k=4pi, nu=0.1, T=0.5)", resolution=f"{n}x{n}", dt=s.dt, max_error=float(err)))
    for n in (32, 128):
        s = AdvectionDiffusion((n,), kappa=0.02, velocity=0.3, t_final=1.0, output="final")
        x = torch.arange(n, dtype=f64) / n
        err = (s(torch.cos(6 * math.pi * x).reshape(1, 1, n))[0, 0] - math.exp(-0.02 * 36 * math.pi**2) * torch.cos(6 * math.pi * (x - 0.3))).abs().max()
        rows.append(dict(case="heat/advection single mode (exact)", resolution=str(n), dt=1.0, max_error=float(err)))

    def dirichlet(n):
        s = BurgersDirichlet(n=n, nu=0.01, t_final=0.25, n_frames=2, output="final")
        u0 = (torch.sin(math.pi * s.x) + 0.5 * torch.sin(3 * math.pi * s.x)).reshape(1, 1, n)
        return s(u0, forcing=torch.tensor([[[1.0, 0.3, 0.1, 0.1, 0.1], [-1.0, 0.7, 0.1, 0.2, 0.1]]], dtype=f64))[0, 0]

    ref = dirichlet(513 if quick else 1025)
    prev = None
    for n in (33, 65, 129) if quick else (33, 65, 129, 257):
        err = float((dirichlet(n) - ref[:: (ref.numel() - 1) // (n - 1)]).abs().max())
        rows.append(dict(case=f"burgers Dirichlet vs n={ref.numel()} reference (T=0.25)", resolution=str(n), dt=BurgersDirichlet(n=n, t_final=0.25, n_frames=2).dt,
                         max_error=err, observed_order=math.log2(prev / err) if prev else ""))
        prev = err
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(1, 1, 32, 32, generator=g, dtype=f64)
    keep = (torch.fft.fftfreq(32).abs() * 32 <= 4)[:, None] & (torch.fft.rfftfreq(32) * 32 <= 4)[None, :]
    w0 = torch.fft.irfft2(torch.fft.rfft2(w0) * keep, s=(32, 32))
    w0 = 4 * w0 / w0.abs().max()
    ref = NavierStokes2D(n=32, nu=1e-2, t_final=0.5, n_frames=2, dt_max=0.5 / 256, output="final")(w0)
    prev = None
    for m in (8, 16, 32):
        err = float((NavierStokes2D(n=32, nu=1e-2, t_final=0.5, n_frames=2, dt_max=0.5 / m, output="final")(w0) - ref).abs().max())
        rows.append(dict(case="ns2d ETDRK4 in time vs dt=T/256 (32x32)", resolution="32x32", dt=0.5 / m, max_error=err,
                         observed_order=math.log2(prev / err) if prev else ""))
        prev = err
    return rows


# ----------------------------------------------------------------------------- gradient cost


def gradient_cost(quick: bool, device: torch.device) -> list[dict]:
    batch = 4 if quick else 16
    rows = []
    for name, res, make in _solvers(quick):
        solver = make()
        u0 = _initial(solver, batch, device, torch.float32)
        w = torch.randn(solver(u0).shape, generator=torch.Generator().manual_seed(1)).to(u0)

        def forward():
            with torch.no_grad():
                solver(u0)

        def grad():
            u = u0.clone().requires_grad_(True)
            (solver(u) * w).sum().backward()

        reps = 2 if quick else 3
        t_f, t_g = _timeit(forward, device, reps), _timeit(grad, device, reps)
        rows.append(dict(solver=name, resolution=res, device=device.type, batch=batch, forward_s=t_f, forward_backward_s=t_g,
                         gradient_over_forward=t_g / t_f))
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """Run the three tables (see the module docstring); ``quick`` uses smaller grids and horizons.

    On the CPU the timings use ``INVDIFF_BENCH_THREADS`` torch threads (default 1; restored
    afterwards), as ``invdiff bench operators`` does: the solvers work on small tensors, where
    intra-op threads add synchronisation and, on a shared machine, make timings erratic.
    """
    import os

    dev = torch.device(device)
    threads = torch.get_num_threads()
    used = int(os.environ.get("INVDIFF_BENCH_THREADS", "1")) if dev.type == "cpu" else threads
    if dev.type == "cpu":
        torch.set_num_threads(used)
    try:
        tables = {
            "pde_throughput": throughput(quick, dev),
            "pde_accuracy": accuracy(quick),
            "pde_gradient": gradient_cost(quick, dev),
        }
    finally:
        torch.set_num_threads(threads)
    for name in ("pde_throughput", "pde_gradient"):
        for row in tables[name]:
            row["torch_threads"] = used
    return tables
