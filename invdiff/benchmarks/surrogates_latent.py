r"""Tables ``surrogates_latent`` and ``surrogates_latent_speed`` of `invdiff bench surrogates`: the latent diffusion surrogate on periodic Burgers.

Held-out trajectories of the periodic Burgers set-up (:mod:`invdiff.surrogates.data_periodic`:
data seed 1, fresh :math:`u_0` and :math:`\nu`; the models were trained on seed 0), 32 frames x
64 nodes, reference = the data's own pseudo-spectral solve on 512 points. Rows of
``surrogates_latent`` (errors on :math:`t > 0`, the metrics of :mod:`invdiff.benchmarks.surrogates`):

* persistence :math:`u(t) = u_0`;
* the solver itself at the output resolution (64 points; cheaper, and under-resolved at small
  :math:`\nu`);
* the FNO regression baseline (:mod:`invdiff.surrogates.fno`, :math:`\nu` as its forcing channel;
  weights from ``$INVDIFF_SURROGATE_RUNS``, default ``runs/surrogates``, a missing file gives a row
  saying so);
* the autoencoder's reconstruction :math:`\mathcal D(E(u))` of the true trajectory (frame 0
  replaced by :math:`u_0`): the floor of the latent model;
* the shipped latent diffusion surrogate (``invdiff/assets/surrogates/burgers-latent-32x64``):
  one sample, the mean of ``n_ens`` samples (DPM-Solver++(2M), ``steps`` Karras levels), and an
  ablation with the viscosities permuted among the test trajectories (how much :math:`\nu`
  conditioning matters).

``surrogates_latent_speed``: trajectories per second (process CPU seconds, one thread, of one
batched call; wall time on a GPU) of each model and of the solver at equal output resolution
(64 points, float32 and float64) and at the data's 512 points, with the ratio to the 64-point
float32 solver. The accuracy table also splits the relative L2 by viscosity (below / above
0.01, the middle of the log-uniform range).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from invdiff.surrogates.data_periodic import PERIODIC_DEFAULTS, nu_channel, periodic_burgers_trajectories, periodic_inputs, periodic_solve
from invdiff.surrogates.fno import persistence

NT, NX = 32, 64


def run(n_test: int, n_ens: int, steps: int, generator, dev, clock, errors, out_dir: str | Path | None = None) -> dict:
    """Both tables as lists of rows (``clock`` and ``errors`` from :mod:`invdiff.benchmarks.surrogates`); with
    ``out_dir``, the figure ``surrogates_latent.png`` (the test trajectory with the smallest viscosity)."""
    from invdiff.surrogates import load_surrogate
    from invdiff.surrogates.train import load_model

    data = periodic_burgers_trajectories(n_test, seed=1, nx=NX, nt=NT)
    u, u0, nu = data["u"].to(dev), data["u0"].to(dev), data["nu"].to(dev)
    low = nu < 0.01  # the lower half of the log-uniform range: the sharpest fronts
    base_errors = errors

    def errors(pred, true):
        out = base_errors(pred, true)
        for name, sel in (("rel_l2_nu_lt_0.01", low), ("rel_l2_nu_ge_0.01", ~low)):
            out[name] = base_errors(pred[sel], true[sel])["rel_l2"] if bool(sel.any()) else float("nan")
        return out

    acc, speed, panels = [], [], {}
    k = int(nu.argmin())
    acc.append(dict(model="persistence", sample="-", steps="-", **errors(persistence(u0, NT), u)))
    u0_fine, nu_fine, _ = periodic_inputs(n_test, seed=1, nx=NX)  # the same inputs on the 512-point grid
    runs = ((1, torch.float32, "solver at 64 points"), (1, torch.float64, "solver at 64 points"),
            (PERIODIC_DEFAULTS["solve_factor"], torch.float64, "solver at 512 points (reference)"))
    for factor, dtype, label in runs:
        u0_solve = u0_fine[:, :: PERIODIC_DEFAULTS["solve_factor"] // factor].to(dev, dtype)
        t0 = clock()
        out = periodic_solve(u0_solve, nu_fine.to(dev), NT, PERIODIC_DEFAULTS["t_final"], PERIODIC_DEFAULTS["dt_max"])
        secs = clock() - t0
        if factor == 1:
            acc.append(dict(model=label, sample=str(dtype)[6:], steps="-", **errors(out.to(u.dtype), u)))
        speed.append(dict(model=f"{label} (ETDRK4, {str(dtype)[6:]})", steps=round(PERIODIC_DEFAULTS["t_final"] / PERIODIC_DEFAULTS["dt_max"]),
                          batch=n_test, cpu_seconds=secs, trajectories_per_s=n_test / secs))
    p = Path(os.environ.get("INVDIFF_SURROGATE_RUNS", "runs/surrogates")) / "burgers-latent-fno-32x64.safetensors"
    if p.exists():
        fno = load_model(p).to(dev)
        t0 = clock()
        with torch.no_grad():
            out = fno(u0, nu_channel(nu, NT, NX).to(u0))
        secs = clock() - t0
        card = fno.card
        panels["FNO"] = out[k]
        acc.append(dict(model="FNO (regression, nu channel)", sample="deterministic", steps="-", **errors(out, u),
                        train_steps=card.get("steps", "?"), train_cpu_s=card.get("cpu_seconds", "?"), parameters=card.get("parameters", "?")))
        speed.append(dict(model="FNO (regression, nu channel)", steps="-", batch=n_test, cpu_seconds=secs, trajectories_per_s=n_test / secs))
    else:
        acc.append(dict(model="FNO (regression, nu channel)", sample=f"not trained ({p} missing; configs/burgers-latent-fno-32x64.json)"))
    try:
        model = load_surrogate("burgers-latent-32x64").to(dev)
    except ValueError as exc:
        acc.append(dict(model="latent diffusion", sample=f"not available ({exc})"))
        return {"surrogates_latent": acc, "surrogates_latent_speed": _ratios(speed)}
    card = model.card
    trained = dict(train_steps=f"{card['autoencoder']['steps']} + {card['diffusion']['steps']}",
                   train_cpu_s=card.get("cpu_seconds", "?"), parameters=card.get("parameters", "?"))
    with torch.no_grad():
        t0 = clock()
        rec = model.ae(u)
        secs = clock() - t0
    rec = torch.cat([u0[:, None], rec[:, 1:]], 1)
    acc.append(dict(model="autoencoder reconstruction (floor)", sample="-", steps="-", **errors(rec, u), **trained))
    t0 = clock()
    ens = model.predict(u0, nu=nu, steps=steps, n_samples=n_ens, generator=generator)
    secs = clock() - t0
    one, mean = (ens, None) if n_ens == 1 else (ens[0], ens.mean(0))
    panels["latent diffusion (1 sample)"] = one[k]
    acc.append(dict(model="latent diffusion", sample="1 sample", steps=steps, **errors(one, u), **trained))
    if mean is not None:
        acc.append(dict(model="latent diffusion", sample=f"mean of {n_ens}", steps=steps, **errors(mean, u), **trained))
    speed.append(dict(model="latent diffusion", steps=steps, batch=n_ens * n_test, cpu_seconds=secs, trajectories_per_s=n_ens * n_test / secs))
    perm = torch.roll(torch.arange(n_test), 1)  # every trajectory gets another one's viscosity
    wrong = model.predict(u0, nu=nu[perm], steps=steps, generator=generator)
    acc.append(dict(model="latent diffusion, nu permuted (ablation)", sample="1 sample", steps=steps, **errors(wrong, u), **trained))
    panels[f"latent, nu of another ({float(nu[perm][k]):.3g})"] = wrong[k]
    if out_dir is not None:
        _figure(Path(out_dir), u[k], float(nu[k]), panels)
    return {"surrogates_latent": acc, "surrogates_latent_speed": _ratios(speed)}


def _figure(out_dir: Path, true, nu: float, panels: dict) -> None:
    from invdiff.benchmarks.surrogates import trajectory_panels

    trajectory_panels(out_dir / "surrogates_latent.png", [(f"solver (nu = {nu:.3g})", true), *panels.items()], 1.0)


def _ratios(speed: list[dict]) -> list[dict]:
    rate = speed[0]["trajectories_per_s"]  # the 64-point solver in float32
    for r in speed:
        r["speedup_vs_solver_64"] = r["trajectories_per_s"] / rate
    return speed
