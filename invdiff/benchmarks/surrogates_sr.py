r"""The 2x-finer table of `invdiff bench surrogates`: WDNO's super-resolution stage against the solver.

Held-out trajectories (data seed 1) solved at 64 frames x 128 nodes (the nested 2x-finer grid of
the 32 x 64 surrogate, :mod:`invdiff.surrogates.data`). Rows, all at the fine resolution, on
:math:`t > 0`:

* the shipped 32 x 64 WDNO (one sample, from the coarse :math:`u_0` and forcing), then
  the super-resolution stage (:class:`~invdiff.surrogates.wdno_sr.WaveletSR`, one sample,
  weights ``burgers-wdno-sr-64x128`` in ``$INVDIFF_SURROGATE_RUNS`` or ``runs/surrogates``), or
  linear interpolation (:func:`~invdiff.surrogates.wdno_sr.interpolate`);
* the same two up-samplers applied to the solver's own coarse trajectory (the nested points of
  the fine solve): the error of the super-resolution step alone.

Columns: MSE, relative L2 (mean and standard error), near-shock MSE (as the accuracy table),
CPU seconds per trajectory of the whole pipeline and its speed-up against the fine solver.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from invdiff.surrogates.data import burgers_solver, burgers_trajectories, crop
from invdiff.surrogates.wdno_sr import coarsen, interpolate

NT, NX = 64, 128


def load_sr(device):
    from invdiff.surrogates import ASSETS
    from invdiff.surrogates.train import load_model

    for p in (ASSETS / "burgers-wdno-sr-64x128.safetensors",
              Path(os.environ.get("INVDIFF_SURROGATE_RUNS", "runs/surrogates")) / "burgers-wdno-sr-64x128.safetensors"):
        if p.exists():
            return load_model(p).to(device)
    return None


def run(wdno, n_test: int, steps: int, generator, device, clock, errors) -> list[dict]:
    """Rows of the table; ``clock``/``errors`` are the accuracy table's (``invdiff.benchmarks.surrogates``)."""
    data = burgers_trajectories(n_test, seed=1, nx=NX, nt=NT)
    u, f = data["u"].to(device), data["f"].to(device)
    uc, fc = coarsen(u), coarsen(f)
    sr = load_sr(device)
    solver = burgers_solver(NX, NT)
    u0s = torch.nn.functional.pad(u[:, 0], (0, 1))
    t0 = clock()
    with torch.no_grad():
        crop(solver(u0s[:, None], forcing=data["forcing_params"].to(device)))
    solver_s = (clock() - t0) / n_test
    rows = [dict(pipeline="solver 64x128 (reference)", cpu_s_per_traj=solver_s)]
    coarse = {"solver 32x64 (nested points)": (uc, 0.0)}
    if wdno is not None:
        t0 = clock()
        with torch.no_grad():
            pred = wdno.predict(uc[:, 0], fc, steps=steps, generator=generator)
        coarse["wdno 32x64 (1 sample)"] = (pred, (clock() - t0) / n_test)
    for name, (c, secs) in coarse.items():
        t0 = clock()
        fine = interpolate(c)
        rows.append(dict(pipeline=f"{name} + linear interpolation", **errors(fine, u), cpu_s_per_traj=secs + (clock() - t0) / n_test))
        if sr is None:
            rows.append(dict(pipeline=f"{name} + SR stage", mse="not trained (configs/burgers-wdno-sr-64x128.json)"))
            continue
        t0 = clock()
        fine = sr.predict(c, fc, steps=steps, generator=generator)
        card = getattr(sr, "card", {})
        rows.append(dict(pipeline=f"{name} + SR stage (1 sample, {steps} steps)", **errors(fine, u),
                         cpu_s_per_traj=secs + (clock() - t0) / n_test, sr_train_steps=card.get("steps", "?"),
                         sr_train_cpu_s=card.get("cpu_seconds", "?")))
    for r in rows:
        if isinstance(r.get("cpu_s_per_traj"), float) and r["cpu_s_per_traj"] > 0:
            r["speedup_vs_fine_solver"] = solver_s / r["cpu_s_per_traj"]
    return rows
