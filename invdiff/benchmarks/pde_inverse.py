r"""`invdiff bench pde-inverse`: a Burgers trajectory and its initial state from sparse noisy sensors.

Problem. A held-out trajectory :math:`u` (data seed 2) of the forced Dirichlet Burgers set-up
(32 frames x 64 nodes, :mod:`invdiff.surrogates.data`), forcing :math:`f` known, initial state
:math:`u_0` unknown; :math:`S \in \{4, 8, 16\}` evenly spaced point sensors
(:class:`~invdiff.operators.pde.PointSensors`) read every frame with Gaussian noise
:math:`\sigma_y = 0.05`:

.. math:: y = H u + \sigma_y n, \qquad H = \text{sensors}, \quad u = \mathcal W^{-1}(x).

Methods.

* DPS and the SMC ensemble (``invdiff.samplers.make``) with the shipped WDNO trajectory prior
  :math:`p(x \mid f)` (the :math:`u_0` condition dropped, as trained with ``p_uncond``); the
  operator acts on the prior's wavelet state through the inverse transform
  (:class:`StatePhysics`). Estimates: the posterior mean; :math:`\hat u_0` is its first frame.
  DPS: 30 ancestral steps, ``guidance="norm"``, :math:`\zeta = 10` (chosen on two validation
  trajectories of data seed 3 with 8 sensors among 0.3, 1, 3, 10, 30, 100: relative L2 0.53,
  0.38, 0.22, 0.17, 0.19, 0.71, with an early checkpoint; ``INVDIFF_PDE_DPS_ZETA`` overrides
  it). Twisted SMC diverged on that validation problem with its fitted twist scale (relative
  L2 800) and is left out.
* Solver in the loop: L-BFGS on :math:`u_0` through the differentiable solver
  (:class:`~invdiff.operators.pde.BurgersDirichlet`, its hand-written adjoint),
  :math:`\min_{u_0} \|y - H\,S(u_0; f)\|^2`, from :math:`u_0 = 0`.

Table ``pde_inverse``: per sensor count and method, relative L2 error of the trajectory on
:math:`t > 0` and of :math:`u_0` (mean over problems), the posterior spread (RMS of the
per-point standard deviation) against the actual RMS error of the posterior mean, the coverage
of the pointwise :math:`\pm 2` std interval, and the CPU seconds per problem (one thread).
"""
from __future__ import annotations

import math
import os
import time

import torch
from deepinv.physics import GaussianNoise, Physics

from invdiff.operators.pde import PointSensors
from invdiff.benchmarks.surrogates import load_models
from invdiff.surrogates.data import burgers_solver, burgers_trajectories, crop

NT, NX, SIGMA_Y = 32, 64, 0.05


class StatePhysics(Physics):
    r"""Sensors acting on a trajectory prior's state: :math:`x \mapsto H\, \mathrm{decode}(x)`."""

    def __init__(self, model, sensors: PointSensors, sigma: float):
        super().__init__(noise_model=GaussianNoise(sigma))
        self.model, self.sensors = model, sensors
        self.x_shape = tuple(model.x_shape)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.sensors.A(self.model.decode(x)[:, None])


class BoundPrior(torch.nn.Module):
    """``D(x, sigma)`` of a conditional prior with ``f`` bound (tiled over the sample-major batch)."""

    def __init__(self, model, f: torch.Tensor):
        super().__init__()
        self.model, self.f = model, f
        self.x_shape = tuple(model.x_shape)

    def forward(self, x, sigma):
        reps = x.shape[0] // self.f.shape[0]
        return self.model(x, sigma, u0=None, f=self.f.repeat(reps, 1, 1))


def sensors(n: int) -> PointSensors:
    """``n`` evenly spaced sensors on the interior of the cropped grid (nodes ``j/64``, ``j < 64``)."""
    length = (NX - 1) / NX
    pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n * length
    return PointSensors((NX,), pos[:, None], length=length, periodic=False, time_axis=True, n_frames=NT)


def _rel(a, b, dims):
    return ((a - b).pow(2).sum(dims).sqrt() / b.pow(2).sum(dims).sqrt())


def _row(S, method, u_hat, u, seconds, std=None):
    row = dict(sensors=S, method=method, rel_l2_traj=float(_rel(u_hat[:, 1:], u[:, 1:], (1, 2)).mean()),
               rel_l2_u0=float(_rel(u_hat[:, 0], u[:, 0], (1,)).mean()), cpu_seconds_per_problem=seconds)
    if std is not None:
        err = u_hat - u
        row.update(posterior_std_rms=float(std.pow(2).mean().sqrt()), error_rms=float(err.pow(2).mean().sqrt()),
                   coverage_2std=float((err.abs() <= 2 * std).double().mean()))
    return row


def solver_in_the_loop(y, H, forcing_params, iters: int) -> torch.Tensor:
    """L-BFGS on ``u0`` (``(B, 64)``, zero start) through the solver; returns the trajectory ``(B, NT, NX)``."""
    solver = burgers_solver(NX, NT)
    u0 = torch.zeros(y.shape[0], NX, dtype=torch.float64, requires_grad=True)
    fp = forcing_params.double()
    opt = torch.optim.LBFGS([u0], max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def traj(v):
        return crop(solver(torch.nn.functional.pad(v, (0, 1))[:, None], forcing=fp))[:, 0]

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((H.A(traj(u0)[:, None]) - y.double()) ** 2).sum() / SIGMA_Y**2
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return traj(u0).float()


def run(out_dir: str = "results/bench", quick: bool = False, device: str = "cpu") -> dict[str, list[dict]]:
    """Tables ``pde_inverse`` (Burgers) and ``pde_inverse_ns`` (Navier-Stokes vorticity,
    :mod:`invdiff.benchmarks.pde_inverse_ns`); ``INVDIFF_PDE_INVERSE_PARTS`` (default
    ``burgers,ns``) picks which."""
    from invdiff.benchmarks import pde_inverse_ns

    torch.set_num_threads(int(os.environ.get("INVDIFF_BENCH_THREADS", "1")))
    parts = os.environ.get("INVDIFF_PDE_INVERSE_PARTS", "burgers,ns").split(",")
    unknown = set(parts) - {"burgers", "ns"}
    if unknown:
        raise ValueError(f"INVDIFF_PDE_INVERSE_PARTS: expected a comma-separated subset of burgers,ns; got {sorted(unknown)}")
    tables = {}
    if "burgers" in parts:
        tables["pde_inverse"] = run_burgers(quick)
    if "ns" in parts:
        tables["pde_inverse_ns"] = pde_inverse_ns.run(quick=quick)
    return tables


def run_burgers(quick: bool = False) -> list[dict]:
    """The Burgers table (module docstring)."""
    from invdiff.samplers import make

    n_prob, n_samples, steps, iters = (2, 4, 20, 5) if quick else (4, 8, 30, 20)
    counts = (8,) if quick else (4, 8, 16)
    model = load_models(torch.device("cpu"))["wdno (wavelet diffusion)"]
    if model is None:
        raise RuntimeError("no WDNO surrogate: neither shipped nor in $INVDIFF_SURROGATE_RUNS (train it with configs/burgers-wdno-32x64.json)")
    data = burgers_trajectories(n_prob, seed=2, nx=NX, nt=NT)
    u, f = data["u"], data["f"]
    gen = torch.Generator().manual_seed(0)
    prior = BoundPrior(model, f)
    rows = []
    for S in counts:
        H = sensors(S)
        y = H.A(u[:, None]) + SIGMA_Y * torch.randn(H.A(u[:, None]).shape, generator=gen)
        physics = StatePhysics(model, H, SIGMA_Y)
        for name, kw in (("dps", dict(steps=steps, zeta=float(os.environ.get("INVDIFF_PDE_DPS_ZETA", "10.0")),
                                       method="ddpm", progress=False)),
                         ("smc", dict(steps=steps, sigma_max=40.0, progress=False))):
            sampler = make(name, prior, **kw)
            t0 = time.process_time()
            out = sampler.sample(y, physics, n_samples=n_samples, generator=gen)
            secs = (time.process_time() - t0) / n_prob
            with torch.no_grad():
                traj = model.decode(out.samples.flatten(0, 1)).reshape(n_samples, n_prob, NT, NX)
            w = out.weights().reshape(n_samples, n_prob, 1, 1)
            mean = (w * traj).sum(0)
            std = (w * (traj - mean) ** 2).sum(0).sqrt()
            rows.append(_row(S, f"{name} ({n_samples} samples, {steps} steps)", mean, u, secs, std))
        t0 = time.process_time()
        u_hat = solver_in_the_loop(y, H, data["forcing_params"], iters)
        rows.append(_row(S, f"solver-in-the-loop L-BFGS ({iters} it.)", u_hat, u, (time.process_time() - t0) / n_prob))
    return rows
