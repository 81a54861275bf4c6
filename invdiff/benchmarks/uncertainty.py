"""`invdiff bench uncertainty`: the targets of the posterior-uncertainty issue, measured.

Tables (``run`` returns ``{name: rows}``; each piece is also callable alone):

- :func:`image_uncertainty` (``uncertainty_images``): the demo tasks (64 x 64 CT, 30 views,
  ``sigma_y = 0.01``; MRI 4x), held-out phantoms, ``N`` particles: PSNR of the (weighted) mean,
  the minimum ESS over the run, the per-pixel coverage of the central 90% intervals *of the
  truth* (one truth per image, so a frequentist check, not SBC), the correlation of the absolute
  error with the posterior std over pixels, NFE and wall time. DPS (the demo's settings) beside.
- :func:`daps_table` (``uncertainty_daps``): DAPS at its defaults against the point estimates of the
  demo (DDS with ``x0_noise``, the demo's uncertainty sampler; DDS defaults; DPS at the demo's
  settings) on the same held-out phantoms, measurement noise and sampler seed: PSNR of the mean of
  ``N`` draws, coverage, error-std correlation, NFE, CPU seconds, and DAPS's gap to the best PSNR.
- :func:`step_cost` (``uncertainty_step_cost``): time per level of ``smc-adaptive`` against a DPS
  step on 64 x 64 CT, same particles, same denoiser (wall time per network evaluation with VJP).
- :func:`mixture_defaults` (``uncertainty_mixture``): MCGdiff mixture with default settings:
  sliced Wasserstein ratio to the exact-vs-exact spread and 90% coverage, d_x 8/80, d_y 1/2.
- :func:`phantom_tv` (``uncertainty_phantoms``): total-variation distance to the exact posterior
  weights over an empirical prior of CT phantoms (the 384-phantom benchmark of
  ``invdiff bench samplers``), with the floor of exact i.i.d. draws.

CPU time is scarce on the development machine: sizes are small (``quick``) and every row says
what it used.
"""
from __future__ import annotations

import time

import torch

__all__ = ["run", "image_uncertainty", "daps_table", "step_cost", "mixture_defaults", "phantom_tv"]

TASKS = {
    "ct": ("ct-phantom-64", "ct-phantom", "ct-sparse-view", dict(size=64, views=30, sigma=0.01), False),
    "mri": ("mri-phantom-64", "mri-phantom", "mri-4x", dict(size=64, sigma=0.01), True),
}


def _magnitude(x):
    return x.pow(2).sum(1, keepdim=True).sqrt()


#: seed of the validation phantoms (training generators, never the held-out test set) on which the DAPS
#: defaults were chosen (:func:`daps_table` with ``validation=True``)
VALIDATION_SEED = 999


def _setup(task: str, n_images: int, device="cpu", validation: bool = False):
    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import make_generator, test_set

    prior_name, family, op, kw, mag = TASKS[task]
    prior = invdiff.load_prior(prior_name, device=device)
    if validation:
        x = make_generator(family, size=64)(n_images, generator=torch.Generator().manual_seed(VALIDATION_SEED)).to(device)
    else:
        x = test_set(family, n_images, 64, device=device)
    physics = operators.make(op, generator=torch.Generator(device=device).manual_seed(0), device=device, **kw)
    return prior, x, physics, physics(x), mag


def _sampler(name: str, prior, settings: dict):
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.samplers import make

    s = dict(settings)
    name = s.pop("sampler", name)  # a label with the registered sampler behind it
    if name == "dps" and "sigmas" not in s:  # the demo's DPS: Karras levels over [0.002, 80]
        s["sigmas"] = karras_sigmas(s.pop("steps", 100), 0.002, 80.0)
    return make(name, prior, progress=False, **s)


def uncertainty_metrics(out, truth, magnitude: bool) -> dict:
    """PSNR, per-pixel 90% coverage of the truth, error-std correlation, min ESS of one run."""
    from invdiff.benchmarks.samplers_gmm import credible_coverage
    from invdiff.metrics import psnr

    view = _magnitude if magnitude else (lambda t: t)
    L, B = out.samples.shape[:2]
    draws = view(out.samples.reshape(L * B, *out.samples.shape[2:])).reshape(L, B, -1)
    w = out.weights()
    mean = (w[:, :, None] * draws).sum(0)
    std = ((w[:, :, None] * (draws - mean) ** 2).sum(0)).sqrt()
    t = view(truth).reshape(B, -1)
    cover = torch.stack([credible_coverage(draws[:, b], w[:, b], t[b], 0.9).double().mean() for b in range(B)])
    err = (mean - t).abs()
    corr = torch.stack([torch.corrcoef(torch.stack([err[b], std[b]]))[0, 1] for b in range(B)])
    return {"psnr": float(psnr(mean.reshape(view(truth).shape), view(truth)).mean()),
            "min_ess": float(out.min_ess().min()), "coverage90": float(cover.mean()),
            "err_std_corr": float(corr.nan_to_num(0.0).mean())}


def image_uncertainty(tasks=("ct", "mri"), runs: dict | None = None, n_particles: int = 32, n_images: int = 1,
                      seed: int = 0, device="cpu") -> list[dict]:
    """Rows of :func:`uncertainty_metrics` per task and sampler (``runs``: name -> settings)."""
    runs = runs or {"smc-adaptive": {}, "daps": {}, "dps": {"steps": 100}, "dds": {},
                    "dds (x0_noise)": {"sampler": "dds", "x0_noise": True}}
    rows = []
    for task in tasks:
        prior, x, physics, y, mag = _setup(task, n_images, device)
        if task == "ct":
            physics.max_iter = 20  # conjugate-gradient iterations of prox_l2 (the SMC ensemble), as the demo
        for name, settings in runs.items():
            if settings.get("sampler", name) == "dps" and "zeta" not in settings:
                settings = {**settings, "zeta": 2.0 if task == "ct" else 1.0}  # the demo's validated zeta
            sampler = _sampler(name, prior, settings)
            t0 = time.perf_counter()
            out = sampler.sample(y, physics, n_samples=n_particles, generator=torch.Generator().manual_seed(seed))
            wall = time.perf_counter() - t0
            rows.append({"task": task, "sampler": name, "settings": str(settings), "N": n_particles,
                         "images": n_images, **uncertainty_metrics(out, x, mag), "nfe": int(out.nfe),
                         "levels": out.trace.get("levels", ""), "time_s": round(wall, 1)})
            print(rows[-1], flush=True)
    return rows


#: the rows of :func:`daps_table`: label -> settings (``sampler`` names the registered sampler behind a
#: label; task settings of the demo come from :mod:`invdiff.tasks`)
DAPS_RUNS = {"daps (defaults)": {"sampler": "daps"},
             "dds x0_noise (demo)": {"sampler": "dds", "x0_noise": True},
             "dds (defaults)": {"sampler": "dds"},
             "dps (demo)": {"sampler": "dps"}}


def daps_table(tasks=("ct", "mri"), n_draws: int = 16, n_images: int = 2, seed: int = 0, runs: dict | None = None,
               quick: bool = False, validation: bool = False, device="cpu") -> list[dict]:
    """DAPS against the demo's point estimates on the same images, noise and seed (module docstring).

    One row per task and sampler (:func:`uncertainty_metrics` of ``n_draws`` draws per image, averaged
    over ``n_images`` held-out phantoms), then one ``gap`` row per task: DAPS's PSNR minus the best
    PSNR of the other rows. ``quick``: 10 levels/steps for every sampler (a smoke run, not a result).
    ``validation``: phantoms of the training generators drawn with :data:`VALIDATION_SEED` instead of the
    held-out test set (where settings are chosen; ``runs`` then lists the candidate settings).
    """
    from invdiff.samplers import make
    from invdiff.tasks import sampler_settings

    runs = runs or DAPS_RUNS
    rows = []
    for task in tasks:
        prior, x, physics, y, mag = _setup(task, n_images, device, validation)
        task_rows = []
        for label, settings in runs.items():
            settings = dict(settings)
            name = settings.pop("sampler", label)
            if name in ("dps", "dds"):
                settings = {**sampler_settings(task, name), **settings}
            if quick:
                settings["steps"] = 10
            sampler = make(name, prior, progress=False, **settings)  # as the demo constructs it
            c0, t0 = time.process_time(), time.perf_counter()
            out = sampler.sample(y, physics, n_samples=n_draws, generator=torch.Generator().manual_seed(seed))
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            m = uncertainty_metrics(out, x, mag)
            task_rows.append({"task": task, "images_from": "validation" if validation else "test",
                              "sampler": label, "settings": str({"sampler": name, **settings}),
                              "N": n_draws, "images": n_images, "psnr": round(m["psnr"], 2),
                              "coverage90": round(m["coverage90"], 3), "err_std_corr": round(m["err_std_corr"], 3),
                              "nfe": int(out.nfe), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1)})
            print(task_rows[-1], flush=True)
        others = [r for r in task_rows if not r["sampler"].startswith("daps")]
        if others and len(others) < len(task_rows):
            best = max(others, key=lambda r: r["psnr"])
            for r in task_rows:
                if r["sampler"].startswith("daps"):
                    task_rows.append({"task": task, "sampler": f"gap: {r['sampler']} - {best['sampler']}",
                                      "psnr": round(r["psnr"] - best["psnr"], 2)})
        rows += task_rows
    return rows


def step_cost(n_particles: int = 8, steps: int = 10, device="cpu") -> list[dict]:
    """Wall time per level of ``smc-adaptive`` and per step of DPS on 64 x 64 CT (same N, same prior)."""
    prior, x, physics, y, _ = _setup("ct", 1, device)
    rows = []
    for name, settings in (("dps", {"steps": steps}), ("smc-adaptive", {"steps": steps, "max_halvings": 0})):
        sampler = _sampler(name, prior, settings)
        t0 = time.perf_counter()
        out = sampler.sample(y, physics, n_samples=n_particles, generator=torch.Generator().manual_seed(0))
        wall = time.perf_counter() - t0
        levels = out.trace.get("levels", steps)
        rows.append({"sampler": name, "N": n_particles, "levels": levels, "nfe": int(out.nfe),
                     "s_per_level": round(wall / levels, 3), "s_per_nfe": round(wall / out.nfe, 3)})
    rows.append({"sampler": "ratio smc-adaptive / dps per level",
                 "s_per_level": round(rows[1]["s_per_level"] / rows[0]["s_per_level"], 2)})
    return rows


def mixture_defaults(names=("smc-adaptive", "daps"), dims=((8, 1), (8, 2), (80, 1), (80, 2)), problems: int = 2,
                     n_draws: int = 512, n_particles: int = 256) -> list[dict]:
    """SW ratio and 90% coverage with DEFAULT settings on the MCGdiff mixture (weighted samplers pool
    ``n_draws / n_particles`` independent ensembles)."""
    from invdiff.benchmarks.samplers_gmm import _run_sampler, credible_coverage, mcgdiff_problem, score_samples
    from invdiff.samplers import make

    rows = []
    for d_x, d_y in dims:
        for name in names:
            acc = []
            for seed in range(problems):
                prob = mcgdiff_problem(d_x, d_y, seed=seed)
                sampler = make(name, prob["prior"], progress=False)
                weighted = name.startswith("smc") or name == "twisted-smc"
                xs, w, nfe, wall = _run_sampler(sampler, prob, n_particles if weighted else None, n_draws, seed + 1)
                sc = score_samples(prob["posterior"], xs, w, seed=seed + 2)
                # coverage of x_true: within each ensemble (weights of one ensemble sum to 1 / reps)
                cov = float(credible_coverage(xs, w if w is not None else None, prob["x_true"][0], 0.9).double().mean())
                acc.append({**sc, "coverage90": cov, "nfe": nfe, "time_s": wall})
            mean = {k: sum(a[k] for a in acc) / len(acc) for k in acc[0]}
            rows.append({"d_x": d_x, "d_y": d_y, "sampler": name, "problems": problems, "draws": n_draws,
                         "sw_ratio": round(mean["sw"] / mean["sw_floor"], 2), "mode_tv": round(mean["mode_tv"], 3),
                         "mode_tv_floor": round(mean["mode_tv_floor"], 3), "coverage90": round(mean["coverage90"], 3),
                         "nfe": int(mean["nfe"]), "time_s": round(mean["time_s"], 1)})
            print(rows[-1], flush=True)
    return rows


PHANTOM_SAMPLERS = ("smc-adaptive", "daps", "dds", ("dds x0_noise", "dds", {"x0_noise": True}))


def phantom_tv(names=PHANTOM_SAMPLERS, n_prior: int = 384, n: int = 256, views: int = 2) -> list[dict]:
    """TV to the exact posterior weights over ``n_prior`` 32 x 32 CT phantoms (defaults of each sampler;
    an entry of ``names`` is a registered name or ``(label, name, settings)``)."""
    from invdiff.benchmarks.samplers import _assign, _tv, phantom_posterior_problem
    from invdiff.samplers import make

    prior, images, physics, y, sigma_y, w, hist = phantom_posterior_problem(n_prior, views)

    g = torch.Generator().manual_seed(3)
    floor = sum(_tv(hist(torch.multinomial(w, n, replacement=True, generator=g)), w) for _ in range(20)) / 20
    rows = [{"sampler": "exact i.i.d. draws (floor)", "N": n, "n_prior": n_prior, "tv": round(floor, 3)}]
    for entry in names:
        label, name, settings = entry if isinstance(entry, tuple) else (entry, entry, {})
        t0 = time.perf_counter()
        out = make(name, prior, progress=False, **settings).sample(y, physics, n_samples=n,
                                                                    generator=torch.Generator().manual_seed(4))
        p = hist(_assign(out.samples[:, 0], images), out.weights()[:, 0])
        rows.append({"sampler": label, "N": n, "n_prior": n_prior, "tv": round(_tv(p, w), 3),
                     "tv_over_floor": round(_tv(p, w) / floor, 2), "min_ess": round(float(out.min_ess().min()), 1),
                     "nfe": int(out.nfe), "time_s": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """All tables (quick: CT only, 8 particles, fewer problems), or those named in ``INVDIFF_BENCH_TABLES``."""
    from invdiff.benchmarks.table import build_selected

    tasks = ("ct",) if quick else ("ct", "mri")
    return build_selected({
        "uncertainty_images": lambda: image_uncertainty(tasks, n_particles=8 if quick else 32, device=device),
        "uncertainty_daps": lambda: daps_table(tasks, n_draws=4 if quick else 16, n_images=1 if quick else 2,
                                               quick=quick, device=device),
        "uncertainty_step_cost": lambda: step_cost(8, 5 if quick else 10, device),
        "uncertainty_mixture": lambda: mixture_defaults(problems=1 if quick else 2, n_draws=256 if quick else 512),
        "uncertainty_phantoms": lambda: phantom_tv(n_prior=128 if quick else 384, n=64 if quick else 256),
    })


if __name__ == "__main__":  # python -m invdiff.benchmarks.uncertainty OUT [--quick] [--only=daps]: one table or all
    import sys

    from invdiff.benchmarks.table import write_table

    torch.set_num_threads(1)
    quick, only = "--quick" in sys.argv, next((a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--only=")), None)
    if only == "daps":
        tables = {"uncertainty_daps": daps_table(("ct",) if quick else ("ct", "mri"), n_draws=4 if quick else 16,
                                                 n_images=1 if quick else 2, quick=quick)}
    else:
        tables = run(sys.argv[1], quick, "cpu")
    for name, rows in tables.items():
        print(write_table(rows, sys.argv[1], name))
