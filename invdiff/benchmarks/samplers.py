"""`invdiff bench samplers`: posterior samplers against exact posteriors, and DPS against deepinv.

Tables (``run`` returns ``{name: rows}``; ``INVDIFF_BENCH_TABLES=a,b`` runs a subset):

- ``samplers_fast``: quality per second on the demo's CT and MRI tasks, fast samplers with their
  defaults against DPS with 1000 ancestral steps (:mod:`invdiff.benchmarks.samplers_fast`).

- ``samplers_gmm``: the MCGdiff Gaussian-mixture benchmark (sliced Wasserstein distance and
  mode-weight error vs NFE for DPS, RED-Diff and SMC), from
  :func:`invdiff.benchmarks.samplers_gmm.gmm_table` when that module is present.
- ``dps_vs_deepinv``: invdiff :class:`~invdiff.samplers.DPS` (float32) against
  ``deepinv.sampling.DPS`` (its default float64, and float32) on the same prior, operator,
  measurements and number of denoiser calls, with the paper's ancestral DDPM step, for two
  operators: inpainting (cheap) and invdiff's 18-view CT (an operator that costs about a third
  of the denoiser). Columns: process CPU time and wall time (minimum over interleaved repeats;
  on a shared CPU the CPU time is the steadier one) and their ratios to deepinv float64 measured
  in the same run, each run's denoiser floor (forward + VJP replayed at the inputs that run
  gave the denoiser) and its overhead beyond it, PSNR against the ground truth with its
  standard error, and the paired PSNR difference to deepinv float64 with its standard error. The prior is the *exact empirical
  prior* of a few hundred 32 x 32 CT phantoms (a zero-covariance ``GaussianMixture``), so both
  samplers use the same, exact denoiser; the guidance weight of each is picked on separate
  validation images from a grid (the two codes scale it differently). The exact posterior
  mean under this prior is given for reference; it is the MMSE estimate for images drawn from
  the prior, not a bound here, since the test images are held-out phantoms that the empirical
  prior does not contain. A last invdiff row, DDIM with
  half the steps, is what invdiff offers beyond deepinv's settings (not an equal-steps row).
  deepinv runs the denoiser and the operator in float32 whatever its ``dtype`` (its
  ``DPSDataFidelity`` casts ``x``); only its SDE arithmetic is float64.
- ``dps_overhead``: per-step time beyond the denoiser: the sampler's time per step against one
  forward pass plus one vector-Jacobian product of the denoiser at the very inputs invdiff DPS
  evaluates it at (its recorded iterates; the floor of any DPS implementation), with the
  operator's forward + VJP alone for reference, for a free denoiser (the framework's own cost),
  the exact GMM prior and a small untrained deepinv DnCNN in EDM preconditioning (weights are
  irrelevant to timing).
- ``exact_posterior_images``: sparse-view CT of a phantom from the empirical prior. The exact
  posterior is a weighted set of the prior's images; each sampler's draws are assigned to their
  nearest image and the total-variation distance ``TV = 1/2 sum_k |p_k - w_k|`` to the exact
  weights ``w`` is reported, with the TV of the same number of exact i.i.d. draws as the floor.

Run ``invdiff bench samplers --quick`` for a smoke run (a few minutes on one CPU core).
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager

import torch

__all__ = ["run", "dps_vs_deepinv", "dps_overhead", "exact_posterior_images", "exact_weights"]


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
def _phantom_prior(n_prior: int, n_extra: int, size: int, device, seed: int = 0):
    """An exact empirical prior over ``n_prior`` CT phantoms, and ``n_extra`` held-out ones."""
    from invdiff.datasets.phantoms import ct_phantoms
    from invdiff.diffusion.gmm import GaussianMixture

    imgs = ct_phantoms(n_prior + n_extra, size=size, generator=torch.Generator().manual_seed(seed)).to(device)
    train, held_out = imgs[:n_prior], imgs[n_prior:]
    w = torch.full((n_prior,), 1.0 / n_prior, device=device)
    return GaussianMixture(w, train, 0.0), train, held_out


def exact_weights(images: torch.Tensor, physics, y: torch.Tensor, sigma_y: float) -> torch.Tensor:
    """Exact posterior weights over an empirical (zero-covariance, uniform) prior.

    .. math:: w_k \\propto \\exp\\big(-\\|y - \\mathcal A(x_k)\\|^2 / (2\\sigma_y^2)\\big)

    ``y`` is one measurement ``(1, ...)``; returns ``(K,)`` in float64.
    """
    with torch.no_grad():
        r = (y - physics.A(images)).flatten(1).double()
    return torch.softmax(-(r * r).sum(1) / (2 * sigma_y**2), dim=0)


def _psnrs(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) of each image of the batch."""
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean PSNR over the batch."""
    return float(_psnrs(x, ref).mean())


def _psnr_sem(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Standard error of the mean PSNR over the batch."""
    p = _psnrs(x, ref)
    return float(p.std() / math.sqrt(len(p))) if len(p) > 1 else float("nan")


def _race(fns: dict, repeats: int) -> dict:
    """Run every callable ``repeats`` times, interleaved (machine load hits all alike), and
    keep the minimum wall time and the minimum process CPU time of each, with its last output.

    On a shared CPU the CPU time is the steadier measure (it does not count time waiting for a
    core); on a GPU the wall time (after synchronising) is the one that matters.
    """
    res = {k: {"wall": math.inf, "cpu": math.inf, "out": None} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            r = res[k]
            r["wall"], r["cpu"], r["out"] = min(r["wall"], w), min(r["cpu"], c), out
    return res


class _Counted(torch.nn.Module):
    """Counts calls of a denoiser (deepinv wants an ``nn.Module``); when ``inputs`` is a list,
    also keeps a copy of every ``(x, sigma)`` it is called with."""

    def __init__(self, denoiser) -> None:
        super().__init__()
        self.denoiser, self.calls = denoiser, 0
        self.inputs: list | None = None

    def forward(self, x, sigma, *args, **kwargs):
        self.calls += 1
        if self.inputs is not None:
            self.inputs.append((x.detach().clone(), torch.as_tensor(sigma).detach().clone()))
        return self.denoiser(x, sigma)


class _Scaled(torch.nn.Module):
    """``D(x, sigma) = x / (1 + sigma^2)``: the exact denoiser of N(0, I), nearly free to evaluate,
    so that a sampler's time with it is its own per-step cost."""

    def forward(self, x, sigma, *args, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return x / (1 + s**2)


class _Preconditioned(torch.nn.Module):
    """An (untrained) network in EDM-style preconditioning,
    ``D(x, sigma) = x / (1 + sigma^2) + eps * sigma / sqrt(1 + sigma^2) * net(x / sqrt(1 + sigma^2))``:
    the network sees unit-scale inputs and its random output is a small correction to the exact
    N(0, I) denoiser, so that a sampler's trajectory stays bounded (weights are irrelevant to
    timing, but a diverging trajectory would time overflowing arithmetic)."""

    def __init__(self, net, eps: float = 0.01) -> None:
        super().__init__()
        self.net, self.eps = net, eps

    def forward(self, x, sigma, *args, **kwargs):
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        c = (1 + s**2).rsqrt()
        return x * c**2 + (self.eps * s * c) * self.net(x * c)


def _inpainting(device):
    import deepinv as dinv

    return dinv.physics.Inpainting(
        img_size=(1, 32, 32), mask=0.3, device=device,
        noise_model=dinv.physics.GaussianNoise(0.05, rng=torch.Generator(device=device).manual_seed(5)),
        rng=torch.Generator(device=device).manual_seed(1),
    )


def _deepinv_dps(prior, steps: int, weight: float, dtype, device, seed: int = 0):
    """deepinv's ``DPS`` with ``num_steps=steps`` time points, i.e. ``steps - 1`` denoiser calls."""
    import deepinv as dinv

    return dinv.sampling.DPS(prior, num_steps=steps, weight=weight, dtype=dtype, device=device,
                             rng=torch.Generator(device=device).manual_seed(seed))


# --------------------------------------------------------------------------------------------
# DPS vs deepinv
# --------------------------------------------------------------------------------------------
@contextmanager
def _bench_threads(device):
    """On the CPU, run with ``INVDIFF_BENCH_THREADS`` torch threads (default 1, as ``invdiff bench
    operators`` and ``pde``; restored afterwards): DPS works on small tensors, where intra-op
    threads add synchronisation and make timings on a shared machine erratic. Yields the count."""
    threads = torch.get_num_threads()
    used = int(os.environ.get("INVDIFF_BENCH_THREADS", "1")) if torch.device(device).type == "cpu" else threads
    torch.set_num_threads(used)
    try:
        yield used
    finally:
        torch.set_num_threads(threads)


def _task(task: str, device):
    """``(physics, sigma_y)`` of a row set: deepinv inpainting (a cheap, diagonal operator) or
    invdiff's parallel-beam CT with 18 views (an operator whose cost is a third of the
    denoiser's at this size, so that the operator's share of a step shows)."""
    if task == "inpainting":
        return _inpainting(device), 0.05
    if task == "ct-sparse-view":
        from invdiff.operators import make

        return make("ct-sparse-view", size=32, views=18, sigma=0.01, device=device), 0.01
    raise ValueError(f"task: expected 'inpainting' or 'ct-sparse-view', got {task!r}")


def _measure(physics, x: torch.Tensor, sigma_y: float, seed: int) -> torch.Tensor:
    """``y = A(x) + sigma_y n`` with the noise from a seeded generator."""
    from invdiff.utils.random import randn

    with torch.no_grad():
        clean = physics.A(x)
    return clean + sigma_y * randn(clean.shape, torch.Generator().manual_seed(seed), clean.device, clean.dtype)


def _paired(x: torch.Tensor, ref_x: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Mean PSNR difference (dB) of ``x`` over ``ref_x`` on the same images, and its standard
    error (paired: the image-to-image spread cancels)."""
    d = _psnrs(x, truth) - _psnrs(ref_x, truth)
    return float(d.mean()), float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def dps_vs_deepinv(quick: bool, device: str) -> list[dict]:
    """invdiff DPS (float32) vs deepinv DPS (its default float64, and float32): time and PSNR.

    Both make ``steps`` calls of the same exact denoiser (deepinv's ``num_steps`` counts time
    points, ``steps + 1`` of them) on the same operator and measurements, with the ancestral
    DDPM step of the paper; each code's guidance weight is picked from ``grid`` on validation
    images (the two codes scale it differently). Two row sets: inpainting and sparse-view CT.
    The last invdiff row, DDIM with half the steps, is what invdiff offers beyond deepinv's
    settings, not an equal-steps comparison.
    """
    from invdiff.samplers import DPS

    n_prior, n_val, n_test, steps, repeats = (128, 4, 8, 100, 2) if quick else (384, 8, 16, 500, 3)
    # guidance weights tried on the validation images (deepinv's VP drift scales its weight by
    # beta(t) dt, so that its best weight is about 3x to 10x invdiff's zeta)
    grid = [0.3, 1.0, 3.0, 10.0] if quick else [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]
    grid_deepinv = [1.0, 3.0, 10.0, 30.0, 100.0] if quick else [1.0, 3.0, 10.0, 30.0, 100.0, 300.0]
    gmm, _, held = _phantom_prior(n_prior, n_val + n_test, 32, device)
    prior = _Counted(gmm)
    val, test = held[:n_val], held[n_val:]
    rows: list[dict] = []
    with _bench_threads(device) as threads:
        for task in ("inpainting", "ct-sparse-view"):
            physics, sigma_y = _task(task, device)
            y_val, y_test = _measure(physics, val, sigma_y, 5), _measure(physics, test, sigma_y, 6)

            def ours(zeta, y, n_steps=steps, method="ddpm"):
                return DPS(prior, steps=n_steps, zeta=zeta, method=method, progress=False)(
                    y, physics, generator=torch.Generator(device=device).manual_seed(0))

            def theirs(weight, y, dtype):  # x_init: the shape, else deepinv solves A_dagger(y) by CG for it
                return _deepinv_dps(prior, steps + 1, weight, dtype, device)(
                    y, physics, x_init=(len(y), *held.shape[1:]), seed=0).float()

            zeta = max(grid, key=lambda z: _psnr(ours(z, y_val), val))
            weight = max(grid_deepinv, key=lambda w: _psnr(theirs(w, y_val, torch.float64), val))
            ref_key = ("deepinv DPS", "ddpm", steps, "float64", weight)
            runs = {
                ("invdiff DPS", "ddpm", steps, "float32", zeta): lambda: ours(zeta, y_test),
                ref_key: lambda: theirs(weight, y_test, torch.float64),
                ("deepinv DPS", "ddpm", steps, "float32", weight): lambda: theirs(weight, y_test, torch.float32),
                # beyond deepinv's settings: DDIM, half the steps, zeta doubled (the 1 / steps rule)
                ("invdiff DPS", "ddim", steps // 2, "float32", 2 * zeta): lambda: ours(2 * zeta, y_test, steps // 2, "ddim"),
            }
            calls: dict = {}

            def counted(k, fn):
                def run_():
                    prior.calls = 0
                    out = fn()
                    calls[k] = prior.calls
                    return out
                return run_

            res = _race({k: counted(k, fn) for k, fn in runs.items()}, repeats)
            # each run's denoiser floor: forward + VJP of the denoiser at the very inputs that run
            # gave it (the runs are deterministic), so that time = floor + the code's overhead
            floors = {}
            for k, fn in runs.items():
                prior.inputs = []
                fn()
                floors[k], prior.inputs = _floor_loop_at(gmm, prior.inputs), None
            floors = _race(floors, repeats)
            ref = res[ref_key]
            for k, r in res.items():
                name, method, n_steps, dt, w = k
                d, d_sem = _paired(r["out"], ref["out"], test)
                rows.append({
                    "task": task, "sampler": name, "solver": method, "dtype": dt, "steps": n_steps,
                    "setting": "equal steps" if n_steps == steps else "half the steps (not equal)",
                    "denoiser_calls": calls[k], "guidance_weight": w,
                    "tuned_at_grid_edge": zeta in (grid[0], grid[-1]) if name == "invdiff DPS"
                    else weight in (grid_deepinv[0], grid_deepinv[-1]),
                    "cpu_s": r["cpu"], "cpu_vs_deepinv_f64": r["cpu"] / ref["cpu"],
                    "denoiser_floor_cpu_s": floors[k]["cpu"], "overhead_cpu_s": r["cpu"] - floors[k]["cpu"],
                    "wall_s": r["wall"], "wall_vs_deepinv_f64": r["wall"] / ref["wall"],
                    "psnr_db": _psnr(r["out"], test), "psnr_sem_db": _psnr_sem(r["out"], test),
                    "psnr_minus_deepinv_f64_db": d, "paired_sem_db": d_sem, "torch_threads": threads,
                })
            # the exact posterior mean under this prior (MMSE for images drawn from the prior; the
            # held-out test images are not, so it is a reference, not a bound)
            means = torch.stack([
                (exact_weights(gmm.means, physics, y_test[b:b + 1], sigma_y).float()[:, None, None, None] * gmm.means).sum(0)
                for b in range(len(test))
            ])
            d, d_sem = _paired(means, ref["out"], test)
            rows.append({"task": task, "sampler": "exact posterior mean", "solver": "closed form", "dtype": "float64",
                         "steps": 0, "setting": "reference (held-out images: not a bound)", "denoiser_calls": 0,
                         "psnr_db": _psnr(means, test), "psnr_sem_db": _psnr_sem(means, test),
                         "psnr_minus_deepinv_f64_db": d, "paired_sem_db": d_sem})
    return rows


# --------------------------------------------------------------------------------------------
# overhead beyond denoiser calls
# --------------------------------------------------------------------------------------------
def _floor_loop(D, xs: torch.Tensor, sigmas: list[float]):
    """One forward with graph and one vector-Jacobian product of ``D`` at each ``(xs[i],
    sigmas[i])``: the denoiser work of a DPS step, the floor of any DPS implementation.

    ``xs`` ``(steps, B, ...)`` are the iterates a sampler visited (the denoiser's cost depends
    on its input: the exact mixture's softmax is slower on noisy than on clean images)."""
    s = [torch.full((xs.shape[1],), float(v), dtype=xs.dtype, device=xs.device) for v in sigmas]
    return _floor_loop_at(D, list(zip(xs, s)))


def _floor_loop_at(D, inputs: list):
    """:func:`_floor_loop` at recorded ``(x, sigma)`` pairs (see :class:`_Counted`)."""

    def loop():
        for x, sigma in inputs:
            xi = x.detach().requires_grad_(True)
            out = D(xi, sigma)
            (g,) = torch.autograd.grad(out, xi, grad_outputs=torch.ones_like(out))
        return g

    return loop


def _operator_loop(physics, x: torch.Tensor, steps: int):
    """``steps`` x (forward and vector-Jacobian product of the operator ``A`` at ``x``)."""

    def loop():
        for _ in range(steps):
            xi = x.detach().requires_grad_(True)
            out = physics.A(xi)
            (g,) = torch.autograd.grad(out, xi, grad_outputs=torch.ones_like(out))
        return g

    return loop


def dps_overhead(quick: bool, device: str) -> list[dict]:
    """Per-step time of invdiff DPS and deepinv DPS (float32 and its default float64) beyond the
    denoiser's forward + VJP, measured at the iterates invdiff DPS visits (inpainting)."""
    import deepinv as dinv

    from invdiff.samplers import DPS
    from invdiff.samplers.dps import default_sigmas

    steps, repeats, batch = (50, 3, 4) if quick else (200, 7, 4)
    gmm, _, held = _phantom_prior(128 if quick else 384, batch, 32, device)
    torch.manual_seed(0)
    cnn = dinv.models.DnCNN(in_channels=1, out_channels=1, depth=8, nf=32, pretrained=None, device=device).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    physics = _inpainting(device)
    y = _measure(physics, held, 0.05, 5)
    sigmas = default_sigmas(steps).tolist()[:-1]
    rows = []
    denoisers = (("x / (1 + sigma^2) (no cost)", _Scaled()), ("empirical GMM (exact)", gmm),
                 ("DnCNN 8x32 (untrained, preconditioned)", _Preconditioned(cnn)))
    gen = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
    with _bench_threads(device) as threads:
        for name, D in denoisers:
            traj = DPS(D, steps=steps, progress=False).sample(y, physics, generator=gen(), record_every=1)
            xs = traj.trace["trajectory"][:-1, 0].to(device)  # the inputs of the steps denoiser calls
            fns = {
                "floor": _floor_loop(D, xs, sigmas),
                "operator": _operator_loop(physics, xs[-1], steps),
                ("invdiff DPS", "float32"): lambda: DPS(D, steps=steps, progress=False)(y, physics, generator=gen()),
                ("deepinv DPS", "float32"): lambda: _deepinv_dps(D, steps + 1, 1.0, torch.float32, device)(
                    y, physics, x_init=tuple(held.shape), seed=0),
                ("deepinv DPS", "float64"): lambda: _deepinv_dps(D, steps + 1, 1.0, torch.float64, device)(
                    y, physics, x_init=tuple(held.shape), seed=0),
            }
            res = _race(fns, repeats)
            floor, op = res.pop("floor"), res.pop("operator")
            for (code, dt), r in res.items():
                row = {"denoiser": name, "sampler": code, "dtype": dt, "steps": steps, "batch": batch}
                for clock in ("cpu", "wall"):
                    row[f"{clock}_ms_per_step"] = 1e3 * r[clock] / steps
                    row[f"denoiser_floor_{clock}_ms"] = 1e3 * floor[clock] / steps
                    row[f"operator_{clock}_ms"] = 1e3 * op[clock] / steps
                    row[f"overhead_{clock}_ms"] = 1e3 * (r[clock] - floor[clock]) / steps
                    row[f"overhead_vs_floor_{clock}"] = r[clock] / floor[clock] - 1
                # the framework's own per-step cost, measured with the free denoiser (where the
                # difference above is not lost in the denoiser's timing noise), over this floor
                free = next((f for f in rows if f["denoiser"] == denoisers[0][0] and f["sampler"] == code
                             and f["dtype"] == dt), row)
                row["free_overhead_vs_floor_cpu"] = free["overhead_cpu_ms"] / row["denoiser_floor_cpu_ms"]
                row["torch_threads"] = threads
                rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# exact posterior on images
# --------------------------------------------------------------------------------------------
def _sigma_for_ess(images, physics, x_true, noise, target: float) -> float:
    """The noise level at which the exact posterior has effective size ``target`` (bisection
    in log sigma with the noise realisation ``noise`` fixed)."""
    with torch.no_grad():
        clean = physics.A(x_true)
    lo, hi = 1e-4, 10.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        w = exact_weights(images, physics, clean + mid * noise, mid)
        ess = float(1 / (w**2).sum())
        lo, hi = (mid, hi) if ess < target else (lo, mid)
    return math.sqrt(lo * hi)


def _assign(samples: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Index of the nearest prior image (L2) of each sample, ``(n,)``."""
    return torch.cdist(samples.flatten(1).double(), images.flatten(1).double()).argmin(1)


def _tv(p: torch.Tensor, w: torch.Tensor) -> float:
    return 0.5 * float((p - w).abs().sum())


def phantom_posterior_problem(n_prior: int, views: int, device="cpu"):
    """The exact-posterior problem over ``n_prior`` 32 x 32 CT phantoms: ``(prior, images, physics,
    y, sigma_y, w, hist)`` with ``sigma_y`` set so that the exact weights ``w`` have ESS about 4 and
    ``hist(idx, weights=None)`` the normalised histogram of image indices."""
    from invdiff.operators import make

    prior, images, _ = _phantom_prior(n_prior, 0, 32, device)
    x_true = images[:1]
    clean_physics = make("ct-sparse-view", size=32, views=views, device=device)
    with torch.no_grad():
        noise = torch.randn(clean_physics.A(x_true).shape, generator=torch.Generator().manual_seed(2)).to(device)
    sigma_y = _sigma_for_ess(images, clean_physics, x_true, noise, target=4.0)
    physics = make("ct-sparse-view", size=32, views=views, sigma=sigma_y, device=device)
    with torch.no_grad():
        y = physics.A(x_true) + sigma_y * noise
    w = exact_weights(images, physics, y, sigma_y)
    K = len(images)

    def hist(idx, weights=None):
        h = torch.zeros(K, dtype=torch.float64)
        h.index_add_(0, idx.cpu(), torch.ones(len(idx), dtype=torch.float64) if weights is None else weights.double().cpu())
        return h / h.sum()

    return prior, images, physics, y, sigma_y, w, hist


def exact_posterior_images(quick: bool, device: str) -> list[dict]:
    """TV distance between exact posterior weights and each sampler's nearest-image histogram."""
    from invdiff.samplers import DPS, REDDiff

    n_prior, n, steps, views = (128, 64, 100, 2) if quick else (384, 256, 200, 2)
    prior, images, physics, y, sigma_y, w, hist = phantom_posterior_problem(n_prior, views, device)

    rows = []
    g = torch.Generator().manual_seed(3)
    floors = [_tv(hist(torch.multinomial(w, n, replacement=True, generator=g)), w) for _ in range(20)]
    base = {"n_samples": n, "views": views, "sigma_y": sigma_y, "exact_ess": float(1 / (w**2).sum())}
    rows.append({"sampler": "exact i.i.d. draws (floor)", **base, "nfe": 0, "tv": sum(floors) / len(floors),
                 "top_image_mass": float(w.max()), "mean_dist_to_nearest": 0.0})

    def add(name, samples, nfe, log_weights=None):
        s = samples[:, 0]
        idx = _assign(s, images)
        p = hist(idx, None if log_weights is None else torch.softmax(log_weights[:, 0].double(), 0))
        dist = float((s.flatten(1).double() - images[idx].flatten(1).double()).norm(dim=1).mean())
        rows.append({"sampler": name, **base, "nfe": nfe, "tv": _tv(p, w), "top_image_mass": float(p[w.argmax()]),
                     "mean_dist_to_nearest": dist})

    gen = lambda: torch.Generator(device=device).manual_seed(4)  # noqa: E731
    for zeta in (0.3, 1.0):
        out = DPS(prior, steps=steps, zeta=zeta, progress=False).sample(y, physics, n_samples=n, generator=gen())
        add(f"invdiff DPS (zeta={zeta})", out.samples, out.nfe)
    out = DPS(prior, steps=steps, zeta=1.0, guidance="squared", step_scaling="ve", progress=False).sample(
        y, physics, n_samples=n, generator=gen())
    add("invdiff DPS squared (zeta=1)", out.samples, out.nfe)
    counted = _Counted(prior)
    for weight in (1.0, 10.0):
        counted.calls = 0
        xs = _deepinv_dps(counted, steps, weight, torch.float32, device)(y.repeat(n, 1, 1, 1), physics, seed=0)
        add(f"deepinv DPS (weight={weight:g})", xs.float()[:, None], counted.calls)
    out = REDDiff(prior, steps=steps, progress=False).sample(y, physics, n_samples=n, generator=gen())
    add("invdiff RED-Diff (point estimate)", out.samples, out.nfe)
    from invdiff.samplers.smc import SMCEnsemble, TwistedSMC

    out = SMCEnsemble(prior, steps=steps, progress=False).sample(y, physics, n_samples=n, generator=gen())
    add(f"invdiff SMC ensemble (N={n})", out.samples, out.nfe, out.log_weights)
    out = SMCEnsemble(prior, steps=steps - 1, data_scale=None, progress=False).sample(
        y, physics, n_samples=n, generator=gen())
    add(f"invdiff SMC ensemble, data fit (N={n})", out.samples, out.nfe, out.log_weights)
    out = TwistedSMC(prior, steps=steps - 1, progress=False).sample(y, physics, n_samples=n, generator=gen())
    add(f"invdiff twisted SMC (N={n})", out.samples, out.nfe, out.log_weights)
    return rows


# --------------------------------------------------------------------------------------------
def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """All tables of ``invdiff bench samplers`` (see the module docstring), or those named in the
    environment variable ``INVDIFF_BENCH_TABLES`` (comma-separated, e.g. ``samplers_fast``)."""
    from invdiff.benchmarks.samplers_fast import fast_table
    from invdiff.benchmarks.samplers_gmm import calibration_table, gmm_table
    from invdiff.benchmarks.table import build_selected

    builders = {
        "samplers_fast": fast_table,
        "samplers_gmm": gmm_table,
        "samplers_calibration": calibration_table,
        "dps_vs_deepinv": dps_vs_deepinv,
        "dps_overhead": dps_overhead,
        "exact_posterior_images": exact_posterior_images,
    }
    return build_selected({name: (lambda f=f: f(quick, device)) for name, f in builders.items()})
