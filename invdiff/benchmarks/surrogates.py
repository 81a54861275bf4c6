r"""`invdiff bench surrogates`: Burgers trajectory surrogates vs the numerical solver.

Held-out initial conditions and forcings (data seed 1; the models were trained on seed 0) of the
WDNO forced Dirichlet Burgers set-up at the training resolution, 32 frames x 64 nodes
(:mod:`invdiff.surrogates.data`). Models: the shipped wavelet-domain diffusion surrogate
(``invdiff/assets/surrogates/burgers-wdno-32x64``), and the baselines trained by the same script
with the configs in ``configs/`` (weights looked up in ``$INVDIFF_SURROGATE_RUNS``, default
``runs/surrogates``; a missing model gives a row saying so): physical-domain diffusion at the
same budget (same CPU-time budget, batch, sampler and steps), a minimal FNO (deterministic
regression) and persistence :math:`u(t) = u_0`.

Two tables:

* ``surrogates_accuracy``: on :math:`t > 0`, the MSE, the relative L2 error
  :math:`\|\hat u - u\|_2 / \|u\|_2` per trajectory (mean and its standard error over test
  trajectories), and the MSE near shocks: on the points where :math:`|\partial_x u|` of the true
  solution is in its top 5% (per trajectory). Diffusion models: one sample (DPM-Solver++(2M),
  ``steps`` Karras levels) and the mean of ``n_ens`` samples.
* ``surrogates_speed``: trajectories per second on ``device`` for each model (the timed call is
  the accuracy run itself: ``n_ens`` samples of each test trajectory in one batch) and for the
  solver on the test batch at equal output resolution (float32 and float64), and the ratio to
  the float32 solver. One timed call each, in process CPU seconds on a CPU (one thread, so
  contention from other processes does not count; wall time on a GPU).

A figure ``surrogates.png`` shows a test trajectory: truth and each model. A third table,
``surrogates_superres`` (:mod:`invdiff.benchmarks.surrogates_sr`; ``INVDIFF_SURROGATES_SR=0``
skips it, ``=only`` runs it alone), evaluates the super-resolution stage at 2x the resolution against the solver.
Two more, ``surrogates_latent`` and ``surrogates_latent_speed`` (:mod:`invdiff.benchmarks.surrogates_latent`;
``INVDIFF_SURROGATES_LATENT=0`` skips them, ``=only`` runs them alone), evaluate the latent diffusion
surrogate on the periodic Burgers set-up with random viscosity (20 DPM-Solver++ steps).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from invdiff.surrogates import load_surrogate
from invdiff.surrogates.data import burgers_solver, burgers_trajectories, crop
from invdiff.surrogates.fno import persistence

NT, NX = 32, 64


def _clock() -> float:
    """Process CPU time: with one thread it is the uncontended run time, robust to a busy shared machine
    (on a GPU device, wall time after synchronising)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _runs_dir() -> Path:
    return Path(os.environ.get("INVDIFF_SURROGATE_RUNS", "runs/surrogates"))


def load_models(device) -> dict:
    """name -> model or None (not trained here)."""
    from invdiff.surrogates.train import load_model

    models = {}
    try:
        models["wdno (wavelet diffusion)"] = load_surrogate("burgers-wdno-32x64")
    except ValueError:
        p = _runs_dir() / "burgers-wdno-32x64.safetensors"
        models["wdno (wavelet diffusion)"] = load_model(p) if p.exists() else None
    for name, file in (("physical-domain diffusion", "burgers-physdiff-32x64"), ("FNO (regression)", "burgers-fno-32x64")):
        p = _runs_dir() / f"{file}.safetensors"
        models[name] = load_model(p) if p.exists() else None
    return {k: (None if m is None else m.to(device)) for k, m in models.items()}


def _errors(pred: torch.Tensor, true: torch.Tensor) -> dict:
    p, t = pred[:, 1:].double(), true[:, 1:].double()
    err2 = (p - t) ** 2
    rel = err2.flatten(1).sum(1).sqrt() / t.flatten(1).norm(dim=1)
    grad = (true[:, 1:, 2:] - true[:, 1:, :-2]).abs().double()  # |u_x| at interior nodes (central)
    thr = torch.quantile(grad.flatten(1), 0.95, dim=1).reshape(-1, 1, 1)
    shock = err2[:, :, 1:-1][grad >= thr].mean()
    n = rel.numel()
    return dict(mse=float(err2.mean()), rel_l2=float(rel.mean()), rel_l2_sem=float(rel.std() / math.sqrt(n)) if n > 1 else 0.0,
                mse_near_shock=float(shock))


def _predict(name, model, u0, f, steps, n_ens, generator):
    """(one sample or the deterministic output, ensemble mean or None, seconds of the call, trajectories made)."""
    t0 = _clock()
    with torch.no_grad():
        if name.startswith("FNO"):
            out = model(u0, f)
            return out, None, _clock() - t0, out.shape[0]
        ens = model.predict(u0, f, steps=steps, n_samples=n_ens, generator=generator)
    secs = _clock() - t0
    if n_ens == 1:
        return ens, None, secs, ens.shape[0]
    return ens[0], ens.mean(0), secs, ens.shape[0] * ens.shape[1]


def trajectory_panels(path: Path, panels: list, t_final: float) -> None:
    """Save ``[(title, u (nt, nx)), ...]`` side by side, one colour scale (that of the first, the truth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), sharey=True)
    vmax = float(panels[0][1].abs().max())
    for ax, (title, u) in zip(axes, panels):
        ax.imshow(u.cpu().numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                  extent=(0, 1, 0, t_final))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("x")
    axes[0].set_ylabel("t")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure(out_dir: Path, true, preds: dict) -> None:
    trajectory_panels(out_dir / "surrogates.png", [("solver", true)] + [(k, v) for k, v in preds.items() if v is not None], 8.0)


def run(out_dir: str = "results/bench", quick: bool = False, device: str = "cpu", steps: int = 30) -> dict:
    threads = int(os.environ.get("INVDIFF_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    dev = torch.device(device)
    n_test, n_ens = (8, 2) if quick else (32, 4)
    if os.environ.get("INVDIFF_SURROGATES_LATENT") == "only":  # just the periodic latent-diffusion tables
        from invdiff.benchmarks import surrogates_latent

        gen = torch.Generator(device=dev).manual_seed(0)
        return surrogates_latent.run(n_test, n_ens, 20, gen, dev, _clock, _errors, out_dir)
    if os.environ.get("INVDIFF_SURROGATES_SR") == "only":  # just the 2x-finer table
        from invdiff.benchmarks import surrogates_sr

        gen = torch.Generator(device=dev).manual_seed(0)
        return {"surrogates_superres": surrogates_sr.run(load_models(dev)["wdno (wavelet diffusion)"], 4 if quick else 16,
                                                         steps, gen, dev, _clock, _errors)}
    data = burgers_trajectories(n_test, seed=1, nx=NX, nt=NT)
    u, u0, f = data["u"].to(dev), data["u0"].to(dev), data["f"].to(dev)
    models = load_models(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    acc, preds, speed = [], {}, []
    acc.append(dict(model="persistence", sample="-", steps="-", **_errors(persistence(u0, NT), u)))
    preds["persistence"] = persistence(u0, NT)[0]
    for name, model in models.items():
        if model is None:
            acc.append(dict(model=name, sample="not trained (see configs/)"))
            continue
        one, ens, secs, made = _predict(name, model, u0, f, steps, n_ens, gen)
        preds[name] = one[0]
        nfe = "-" if name.startswith("FNO") else steps
        card = getattr(model, "card", {})
        trained = dict(train_steps=card.get("steps", "?"), train_cpu_s=card.get("cpu_seconds", "?"), parameters=card.get("parameters", "?"))
        acc.append(dict(model=name, sample="1 sample" if nfe != "-" else "deterministic", steps=nfe, **_errors(one, u), **trained))
        if ens is not None:
            acc.append(dict(model=name, sample=f"mean of {n_ens}", steps=nfe, **_errors(ens, u), **trained))
        speed.append(dict(model=name, steps=nfe, batch=made, cpu_seconds=secs, trajectories_per_s=made / secs))
    _figure(Path(out_dir), u[0], preds)
    for dtype in (torch.float32, torch.float64):
        solver = burgers_solver(NX, NT)
        pf = data["forcing_params"].to(dev, dtype)
        u0s = torch.nn.functional.pad(u0.to(dtype), (0, 1))
        t0 = _clock()
        with torch.no_grad():
            crop(solver(u0s[:, None], forcing=pf))
        secs = _clock() - t0
        speed.insert(dtype == torch.float64, dict(model=f"solver (RK4 finite differences, {str(dtype)[6:]})", steps=solver.substeps * NT,
                                                  batch=n_test, cpu_seconds=secs, trajectories_per_s=n_test / secs))
    rate = speed[0]["trajectories_per_s"]
    for r in speed:
        r["speedup_vs_solver_fp32"] = r["trajectories_per_s"] / rate
        r["device"] = f"{device} ({threads} thread{'s' if threads > 1 else ''})" if dev.type == "cpu" else device
    tables = {"surrogates_accuracy": acc, "surrogates_speed": speed}
    if os.environ.get("INVDIFF_SURROGATES_SR", "1") != "0":  # the 2x-finer table (invdiff.benchmarks.surrogates_sr)
        from invdiff.benchmarks import surrogates_sr

        tables["surrogates_superres"] = surrogates_sr.run(models["wdno (wavelet diffusion)"], 4 if quick else 16, steps,
                                                          gen, dev, _clock, _errors)
    if os.environ.get("INVDIFF_SURROGATES_LATENT", "1") != "0":  # periodic Burgers, latent diffusion (surrogates_latent)
        from invdiff.benchmarks import surrogates_latent

        tables.update(surrogates_latent.run(n_test, n_ens, 20, gen, dev, _clock, _errors, out_dir))
    return tables
