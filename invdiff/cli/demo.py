"""`invdiff demo`: the main job. CT and MRI reconstructions on held-out phantoms, classical
baselines against diffusion posterior samplers with the shipped priors.

Tasks (64 x 64 held-out phantoms, :func:`invdiff.datasets.phantoms.test_set`):

- ``ct``: sparse-view parallel-beam CT, 30 views on [0, 180), Gaussian noise; prior
  ``ct-phantom-64``; baseline: filtered back-projection.
- ``mri``: single-coil Cartesian MRI, 4x variable-density lines; prior ``mri-phantom-64``;
  baseline: zero-filled inverse FFT. Metrics on the magnitude image.

Methods: the operator's baseline, total variation (deepinv's FISTA with ``TVPrior``), DPS
(Chung et al. 2023), RED-Diff (Mardani et al. 2024) and DDS (Chung, Lee & Ye 2024, with its
defaults; 16 posterior draws with its calibrated spread, ``x0_noise``: their mean and spread), all built by name through
:func:`invdiff.samplers.make` with the settings of :mod:`invdiff.tasks`; for reference, deepinv's
DiffPIR (Zhu et al. 2023) on the same denoiser (its settings tuned as ours were, the data mapped to
the [0, 1] range it assumes: :mod:`invdiff.interop`), and with ``--reference`` DPS with the paper's
1000 ancestral steps.

Uncertainty (the sampler :data:`invdiff.tasks.UNCERTAINTY`): the weighted posterior standard
deviation per pixel, shown beside the absolute error of the posterior mean, and in the table
the Pearson correlation of the two over the pixels (``err_std_corr``), the fraction of pixels
whose truth lies inside the weighted central 90% interval of the particles (``coverage90``)
and the smallest effective sample size over the run (``min_ess``), means over the images
(:func:`invdiff.benchmarks.uncertainty.uncertainty_metrics`).

Writes to ``--out`` (atomically): ``results.json`` (table and settings), ``results.h5``
(truth, measurements, every reconstruction, posterior std), ``demo.png`` (the figure) and the
table as ``demo.md`` / ``demo.csv``.
"""
from __future__ import annotations

HELP = "Run the main job: CT and MRI reconstructions on held-out phantoms, baselines vs diffusion samplers."


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.add_argument("--out", default="results/demo", help="output folder (default results/demo)")
    p.add_argument("--quick", action="store_true", help="tiny run (1 image, few steps) for tests")
    p.add_argument("--tasks", default="ct,mri", help="comma-separated tasks: ct, mri (default both)")
    p.add_argument("--images", type=int, default=None, help="held-out images per task (default 2; 1 with --quick)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the samplers")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-figure", action="store_true", help="skip the figure")
    p.add_argument("--progress", action="store_true", help="progress bars of the samplers")
    p.add_argument("--reference", action="store_true",
                   help="also run DPS with the paper's 1000 ancestral steps (slow: about 1 minute per task on 2 cores)")
    p.set_defaults(func=run)


def total_variation(y, physics, lam: float, iters: int):
    """TV reconstruction ``argmin_x ||A x - y||^2 / 2 + lam TV(x)`` by deepinv's FISTA.

    Step ``1 / ||A||^2 = 1`` (the operators are normalised), started at the operator's baseline
    (FBP / zero-filled), TV prox by deepinv's ``TVPrior`` (20 inner iterations).
    """
    import deepinv as dinv

    model = dinv.optim.FISTA(data_fidelity=dinv.optim.L2(), prior=dinv.optim.TVPrior(n_it_max=20),
                             lambda_reg=lam, stepsize=1.0, max_iter=iters)
    x0 = physics.baseline(y)
    return model(y, physics, init={"est": (x0, x0.clone())})


# the diffusion methods of the demo: (registered sampler, label); settings in invdiff.tasks
# (one generator, drawn from in this order, so that adding a method after the others leaves their numbers unchanged)
METHODS = (("dps", "DPS"), ("red-diff", "RED-Diff"), ("dds", "DDS"))


def _magnitude(x):
    return x.pow(2).sum(1, keepdim=True).sqrt()


def run_task(task: str, n_images: int, quick: bool, device, seed: int, progress: bool, reference: bool = False):
    """Run every method on one task; returns (rows, arrays)."""
    import time

    import torch

    from invdiff.benchmarks.uncertainty import uncertainty_metrics
    from invdiff.metrics import psnr, ssim
    from invdiff.samplers import make as make_sampler
    from invdiff.interop import deepinv_diffpir
    from invdiff.tasks import TASKS, UNCERTAINTY, deepinv_settings, make_task, sampler_settings, uncertainty_settings

    spec = TASKS[task]
    prior, physics, x, y = make_task(task, n_images, device=device, seed=seed)
    g = torch.Generator(device="cpu").manual_seed(seed)
    view = _magnitude if spec["magnitude"] else (lambda t: t)
    if task == "ct":  # conjugate-gradient iterations of prox_l2 (SMC's exact split); deepinv's default is 50
        physics.max_iter = 20
    results, rows = {}, []

    def record(method, x_hat, seconds, nfe, out=None):
        x_hat = x_hat.detach()
        a, b = view(x_hat), view(x)
        row = dict(task=task, method=method, psnr=float(psnr(a, b).mean()), ssim=float(ssim(a, b).mean()),
                   seconds=round(seconds, 2), nfe=nfe, err_std_corr="", coverage90="", min_ess="")
        std = None
        if out is not None:  # the uncertainty sampler: its spread against the truth
            draws = view(out.samples.flatten(0, 1)).unflatten(0, out.samples.shape[:2])
            w = out.weights().reshape(*draws.shape[:2], *([1] * (draws.ndim - 2)))
            std = (w * (draws - (w * draws).sum(0)) ** 2).sum(0).sqrt()  # of what is shown (MRI: magnitude)
            m = uncertainty_metrics(out, x, spec["magnitude"])
            # min ESS: over the run for weighted samplers; for equally weighted independent draws it is N
            row.update(err_std_corr=round(m["err_std_corr"], 3), coverage90=round(m["coverage90"], 3),
                       min_ess=round(m["min_ess"], 2))
        results[method] = dict(x=x_hat, std=None if std is None else std.detach(), metrics=row)
        rows.append(row)

    t = time.perf_counter()
    with torch.no_grad():
        xb = physics.baseline(y)
    record(spec["baseline"], xb, time.perf_counter() - t, 0)
    t = time.perf_counter()
    with torch.no_grad():
        xt = total_variation(y, physics, spec["tv_lambda"], 20 if quick else 100)
    record("TV", xt, time.perf_counter() - t, 0)
    methods = list(METHODS)
    if reference:  # DPS with the paper's 1000 ancestral steps, the quality reference
        methods.append(("dps-1000", "DPS-1000"))
    for name, label in methods:
        if name == "dps-1000":
            s, name = dict(sampler_settings(task, "dps"), steps=1000), "dps"
        else:
            s = uncertainty_settings(task, quick) if name == UNCERTAINTY else sampler_settings(task, name, quick)
        particles = s.pop("particles", 1)
        sampler = make_sampler(name, prior, progress=progress, **s)
        t = time.perf_counter()
        out = sampler.sample(y, physics, n_samples=particles, generator=g)
        seconds = time.perf_counter() - t
        record(label, out.mean(), seconds, int(out.nfe), out if name == UNCERTAINTY and particles > 1 else None)
    # deepinv's DiffPIR on the same denoiser, for reference (what a deepinv user would run: its
    # zeta and lambda tuned on validation phantoms, the data mapped to the [0, 1] it assumes)
    diffpir = deepinv_diffpir(prior, spec["op_kwargs"]["sigma"], 10 if quick else 100, data_range=spec["data_range"],
                              **deepinv_settings(task, "diffpir"))
    torch.manual_seed(seed)  # DiffPIR draws from the global generator
    t = time.perf_counter()
    xd = diffpir(y, physics)
    record("deepinv DiffPIR", xd, time.perf_counter() - t, 10 if quick else 100)
    arrays = dict(truth=x, y=y, results=results)
    return rows, arrays


def _figure(path, per_task: dict, rows: list[dict]) -> None:
    """Truth and every method's reconstruction; then, for the uncertainty sampler, the absolute
    error of its posterior mean beside its posterior std (one colour scale for both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from invdiff.tasks import TASKS
    from invdiff.utils.io import atomic_path

    tasks = list(per_task)
    cols = 3 + max(len(a["results"]) for a in per_task.values())
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.0 * cols, 2.3 * len(tasks)), squeeze=False)
    for r, task in enumerate(tasks):
        arr = per_task[task]
        methods = list(arr["results"])
        mag = TASKS[task]["magnitude"]
        show = (lambda t: t[0].pow(2).sum(0).sqrt()) if mag else (lambda t: t[0, 0])
        panels = [("truth", show(arr["truth"]).cpu())]
        psnrs = {row["method"]: row["psnr"] for row in rows if row["task"] == task}
        panels += [(f"{m}\n{psnrs[m]:.1f} dB", show(arr["results"][m]["x"]).cpu()) for m in methods]
        for c, (title, img) in enumerate(panels):
            axes[r, c].imshow(img.clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(title, fontsize=8)
        unc = next(((m, v) for m, v in arr["results"].items() if v["std"] is not None), None)
        if unc is not None:
            m, v = unc
            err = (show(v["x"]) - show(arr["truth"])).abs().cpu()
            std = v["std"][0, 0].cpu()  # already of the magnitude for MRI
            vmax = float(torch.cat([err.flatten(), std.flatten()]).double().quantile(0.99))
            met = v["metrics"]
            axes[r, -2].imshow(err, cmap="magma", vmin=0, vmax=vmax)
            axes[r, -2].set_title(f"|error| of {m}", fontsize=8)
            im = axes[r, -1].imshow(std, cmap="magma", vmin=0, vmax=vmax)
            axes[r, -1].set_title(f"{m} posterior std\ncorr {met['err_std_corr']:.2f}, 90% cover {met['coverage90']:.2f}",
                                  fontsize=8)
            fig.colorbar(im, ax=axes[r, -1], fraction=0.046)
        axes[r, 0].set_ylabel(task.upper())
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run(args) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    import invdiff
    from invdiff.benchmarks.table import markdown, write_table
    from invdiff.datasets.loaders import save_hdf5
    from invdiff.tasks import TASKS, UNCERTAINTY, deepinv_settings, sampler_settings, uncertainty_settings
    from invdiff.utils.io import atomic_path

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ValueError(f"--tasks: expected a comma-separated subset of {sorted(TASKS)}, got {args.tasks!r}")
    n_images = args.images if args.images is not None else (1 if args.quick else 2)
    if n_images < 1:
        raise ValueError(f"--images: expected >= 1, got {n_images}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = Path(args.out)
    started = time.perf_counter()
    rows, per_task = [], {}
    for task in tasks:
        r, arrays = run_task(task, n_images, args.quick, device, args.seed, args.progress, args.reference)
        rows += r
        per_task[task] = arrays
    total = time.perf_counter() - started
    text = markdown(rows)
    print(text)
    print(f"\n{len(tasks)} task(s) x {n_images} held-out image(s), total {total:.1f} s on {device}")
    for task in tasks:  # the targets of the demo, stated with what was reached
        by = {row["method"]: row["psnr"] for row in rows if row["task"] == task}
        base = by[TASKS[task]["baseline"]]
        best = max((label for _, label in METHODS), key=by.get)
        print(f"{task}: best diffusion method {best} {by[best]:.2f} dB: {by[best] - base:+.2f} dB over the baseline "
              f"(target +5), {by[best] - by['TV']:+.2f} dB over TV (target +1); deepinv DiffPIR "
              f"{by['deepinv DiffPIR']:.2f} dB ({by['deepinv DiffPIR'] - by[best]:+.2f} dB)")
    write_table(rows, out, "demo")
    settings = dict(tasks={t: {k: v for k, v in TASKS[t].items()} for t in tasks},
                    samplers={t: {name: uncertainty_settings(t, args.quick) if name == UNCERTAINTY
                                      else sampler_settings(t, name, args.quick) for name, _ in METHODS} for t in tasks},
                    deepinv_diffpir={t: deepinv_settings(t, "diffpir") for t in tasks},
                    images=n_images, seed=args.seed, quick=args.quick, device=str(device),
                    version=invdiff.__version__, torch=torch.__version__, total_seconds=round(total, 2))
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(dict(rows=rows, settings=settings), indent=2))
    arrays = {}
    for task, arr in per_task.items():
        arrays[f"{task}/truth"] = arr["truth"]
        arrays[f"{task}/y"] = arr["y"]
        for m, v in arr["results"].items():
            arrays[f"{task}/{m}/mean"] = v["x"]
            if v["std"] is not None:
                arrays[f"{task}/{m}/std"] = v["std"]
    save_hdf5(out / "results.h5", arrays, {"settings": settings, "rows": rows})
    if not args.no_figure:
        _figure(out / "demo.png", per_task, rows)
    print(f"wrote {out}/results.json, results.h5, demo.md, demo.csv" + ("" if args.no_figure else ", demo.png"))
    return 0
