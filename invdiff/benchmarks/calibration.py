"""`invdiff bench calibration`: simulation-based calibration of every registered continuous sampler
with its DEFAULT settings (:mod:`invdiff.calibration`).

Tables (``run`` returns ``{name: rows}``), one row per sampler, with exact posterior draws
(:class:`~invdiff.calibration.ExactGaussianPosterior`) as the reference row:

- ``calibration_mixture``: the MCGdiff mixture (``d_x = 8``, ``d_y`` 1 and 2; one random operator
  and noise level per ``d_y``), truths drawn from the mixture.
- ``calibration_trained`` (:func:`trained_rows`): the demo tasks (64 x 64 CT and MRI) with the
  shipped priors, truths from the prior's own ODE, DDS with and without ``x0_noise``.
- ``calibration_images``: sparse-view CT of 16 x 16 phantoms (8 views, ``sigma_y = 0.05``) as a
  dense matrix, under an empirical phantom prior (a Gaussian mixture over 64 phantoms with a
  per-pixel std of 0.05, so the posterior is continuous and exact), truths drawn from it (16 x 16
  keeps the exact posterior's 64 full covariances at 34 MB; 32 x 32 with 128 needs over 1 GB).

Columns: ``coverage90`` (per-pixel central 90% intervals, mean over trials; ``coverage90_se``
across trials), ``pixel_chi2_p`` (uniformity of the pooled pixel ranks; pixels of a trial are
correlated, so a descriptive number), ``ks_p_*`` (Kolmogorov-Smirnov p-value of the ranks of each
summary statistic, independent across trials), ``min_ess`` for weighted samplers, ``nfe`` and
``time_s``. Samplers that fail on a task are reported with their error. Figures: the rank
histograms of each sampler (``calibration_<task>_<sampler>.png``).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

__all__ = ["run", "continuous_samplers", "sbc_rows", "phantom_mixture", "trained_rows"]


def continuous_samplers() -> list[str]:
    """Registered samplers for continuous priors (those not described as for discrete priors)."""
    from invdiff.samplers import available

    return [k for k, v in available().items() if "discrete" not in v.lower()]


def phantom_mixture(n: int = 64, size: int = 16, std: float = 0.05, seed: int = 0):
    """A Gaussian mixture over ``n`` CT phantoms (flattened), isotropic per-pixel ``std``."""
    from invdiff.datasets.phantoms import ct_phantoms
    from invdiff.diffusion.gmm import GaussianMixture

    imgs = ct_phantoms(n, size=size, generator=torch.Generator().manual_seed(seed)).double().flatten(1)
    return GaussianMixture(torch.full((n,), 1.0 / n, dtype=torch.float64), imgs, std**2)


def _dense_ct(size: int, views: int, sigma: float):
    """invdiff's sparse-view CT as a dense :class:`~invdiff.operators.Matrix` on flattened images."""
    from invdiff.operators import Matrix, make

    op = make("ct-sparse-view", size=size, views=views, dtype=torch.float64)
    eye = torch.eye(size * size, dtype=torch.float64).reshape(-1, 1, size, size)
    with torch.no_grad():
        cols = torch.cat([op.A(eye[i:i + 256]).flatten(1) for i in range(0, size * size, 256)])
    return Matrix(cols.T.contiguous(), sigma=sigma)


def sbc_rows(task: str, prior, physics, names: list[str], trials: int, draws: int, seed: int,
             out_dir: Path | None, chunk: int | None = None, settings: dict | None = None,
             x_shape=None) -> list[dict]:
    """SBC of each sampler in ``names`` (defaults unless ``settings[name]``, ``progress=False``) and,
    for exact priors (those with ``posterior``), of exact draws. Trained priors: truths from the
    unconditional ODE (:func:`~invdiff.calibration.draw_prior`, signals of shape ``x_shape``)."""
    from invdiff.calibration import ExactGaussianPosterior, draw_prior, sbc
    from invdiff.samplers import make

    truths = draw_prior(prior, trials, x_shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    exact = ["exact posterior draws"] if hasattr(prior, "posterior") else []
    for name in [*exact, *names]:
        t0 = time.perf_counter()
        try:
            opts = dict((settings or {}).get(name, {}))  # "sampler": the registered name behind a label
            sampler = ExactGaussianPosterior(prior) if name.startswith("exact") else \
                make(opts.pop("sampler", name), prior, progress=False, **opts)
            res = sbc(prior, physics, sampler, trials, draws, generator=torch.Generator().manual_seed(seed + 1),
                      truths=truths, chunk=chunk)
        except Exception as err:  # a sampler that cannot run this task is reported, not fatal
            rows.append({"task": task, "sampler": name, "error": f"{type(err).__name__}: {err}"[:160]})
            continue
        row = {"task": task, "sampler": name, **res.summary(),
               "nfe": int(sampler.denoiser.nfe) if hasattr(sampler, "denoiser") else 0,
               "time_s": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        if out_dir is not None:
            res.plot(out_dir / f"calibration_{task}_{name.replace(' ', '_')}.png", title=f"{task}: {name}")
    return rows


#: DDS with its calibrated spread (``x0_noise``, the demo's uncertainty sampler), beside the defaults
DDS_X0 = "dds (x0_noise)"


def trained_rows(tasks=("ct", "mri"), runs: dict | None = None, trials: int = 8, draws: int = 32, chunk: int = 4,
                 seed: int = 11, out_dir: Path | None = None) -> list[dict]:
    """SBC on the demo tasks with the shipped (trained) priors (:mod:`invdiff.tasks`): truths from
    the prior's own ODE, so the prior's fit to real phantoms does not enter; ``runs``: sampler name
    -> settings (default: DDS with its defaults and with ``x0_noise``, the demo's uncertainty sampler). Coverage is per
    pixel and channel (MRI: real and imaginary parts)."""
    from invdiff.tasks import make_task

    runs = runs if runs is not None else {"dds": {}, DDS_X0: {"sampler": "dds", "x0_noise": True}}
    rows = []
    for task in tasks:
        prior, physics, x, _ = make_task(task, 1)
        for r in sbc_rows(f"{task}-trained", prior, physics, list(runs), trials, draws, seed, out_dir, chunk=chunk,
                          settings=runs, x_shape=tuple(x.shape[1:])):
            rows.append({**r, "settings": str(runs.get(r["sampler"], ""))})
            print(rows[-1], flush=True)
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """The tables of the module docstring (quick: fewer trials and draws), or those named in
    ``INVDIFF_BENCH_TABLES``."""
    from invdiff.benchmarks.samplers_gmm import mcgdiff_problem
    from invdiff.benchmarks.table import build_selected

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = continuous_samplers() + [DDS_X0]
    extra = {DDS_X0: {"sampler": "dds", "x0_noise": True}}

    def mixture():
        trials, draws = (40, 32) if quick else (200, 64)
        rows = []
        for d_y in (1, 2):
            prob = mcgdiff_problem(8, d_y, seed=d_y)
            rows += [{"d_y": d_y, **r} for r in sbc_rows(f"mixture-dy{d_y}", prob["prior"], prob["physics"], names,
                                                         trials, draws, seed=d_y, out_dir=out, settings=extra)]
        return rows

    def images():
        trials, draws = (16, 16) if quick else (64, 32)
        return sbc_rows("ct16", phantom_mixture(), _dense_ct(16, 8, 0.05), names, trials, draws, seed=7, out_dir=out,
                        chunk=16, settings=extra)

    return build_selected({
        "calibration_mixture": mixture,
        "calibration_images": images,
        "calibration_trained": lambda: trained_rows(("mri",) if quick else ("ct", "mri"), trials=8 if quick else 32,
                                                    out_dir=out),
    })
