"""`invdiff bench priors`: quality of the shipped priors, and posterior samplers on them.

Tables:

- ``denoising``: per prior and sigma, the held-out MSE of the trained denoiser ``D(x, sigma)``
  beside the best Gaussian prior of the same data (empirical mean m and covariance C of N
  phantoms). The Gaussian denoiser ``m + C (C + sigma^2 I)^{-1} (x - m)`` is applied exactly
  through the N x N Gram matrix (push-through identity, ``C = X_c^T X_c / (N - 1)``):

  .. math:: C (C + \\sigma^2 I)^{-1} = X_c^T (X_c X_c^T + (N - 1) \\sigma^2 I)^{-1} X_c ,

  and the closed-form MSE of the population-optimal linear denoiser,
  ``(1/d) sum_k lambda_k sigma^2 / (lambda_k + sigma^2)`` with the sample eigenvalues (an
  optimistic value for the Gaussian, by Jensen).
- ``samplers``: PSNR / SSIM / wall time vs NFE of invdiff's DPS, RED-Diff, DDS and SMC ensemble on
  the demo tasks (CT 30 views, MRI 4x), beside deepinv's DPS and DiffPIR on the same denoiser, each
  with the settings of :mod:`invdiff.tasks` (ours and deepinv's tuned the same way, at 100 steps, and
  kept at every NFE: DPS's step size and DDS's once-per-step correction are not step-count invariant).
"""
from __future__ import annotations

import time

import torch

SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _gram_gaussian(fit: torch.Tensor):
    """(mean, apply(x, sigma), eigenvalues) of the empirical Gaussian of rows of ``fit`` (N, d), float64."""
    m = fit.mean(0)
    Xc = fit - m
    N = fit.shape[0]
    G = Xc @ Xc.T
    eig = torch.linalg.eigvalsh(G / (N - 1))

    def apply(x: torch.Tensor, sigma: float) -> torch.Tensor:
        rhs = Xc @ (x - m).T  # (N, B)
        sol = torch.linalg.solve(G + (N - 1) * sigma**2 * torch.eye(N, dtype=G.dtype), rhs)
        return m + (Xc.T @ sol).T

    return m, apply, eig


def denoising_rows(quick: bool, device) -> list[dict]:
    import invdiff
    from invdiff.datasets.phantoms import make_generator, test_set

    rows = []
    n_fit, n_test = (512, 8) if quick else (4096, 64)
    for name, family in (("ct-phantom-64", "ct-phantom"), ("mri-phantom-64", "mri-phantom")):
        D = invdiff.load_prior(name, device=device)
        fit = make_generator(family, size=64)(n_fit, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        _, apply, eig = _gram_gaussian(fit.flatten(1))
        x0 = test_set(family, n_test, 64, dtype=torch.float64)
        g = torch.Generator().manual_seed(1)
        d = x0[0].numel()
        for sigma in SIGMAS:
            x = x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
            with torch.no_grad():
                mse = float((D(x.float().to(device), sigma).double().cpu() - x0).pow(2).mean())
            mse_g = float((apply(x.flatten(1), sigma) - x0.flatten(1)).pow(2).mean())
            bound = float((eig.clamp(min=0) * sigma**2 / (eig.clamp(min=0) + sigma**2)).sum() / d)
            rows.append(dict(prior=name, sigma=sigma, mse_network=mse, mse_gaussian_heldout=mse_g,
                             mse_gaussian_closed_form=bound, ratio_network_to_gaussian=mse / mse_g, n_fit=n_fit, n_test=n_test))
    return rows


def _deepinv_methods(prior, task: str, steps: int):
    """deepinv's DPS and DiffPIR on ``prior`` with the settings of :data:`invdiff.tasks.DEEPINV_SETTINGS`
    (tuned on validation phantoms as ours were), DiffPIR on the data mapped to [0, 1]
    (:func:`invdiff.interop.deepinv_diffpir`); each a function ``(y, physics, generator) -> x``."""
    from invdiff.interop import deepinv_diffpir, deepinv_dps
    from invdiff.tasks import TASKS, deepinv_settings

    def seed(g):
        return int(torch.randint(0, 2**31 - 1, (1,), generator=g))

    spec, out = TASKS[task], {}
    dps = deepinv_dps(prior, steps, **deepinv_settings(task, "dps"))
    out["deepinv DPS"] = lambda y, physics, g: dps(y, physics, seed(g))
    diffpir = deepinv_diffpir(prior, spec["op_kwargs"]["sigma"], steps, data_range=spec["data_range"],
                              **deepinv_settings(task, "diffpir"))

    def run_diffpir(y, physics, g):
        torch.manual_seed(seed(g))  # DiffPIR draws from torch's global generator
        return diffpir(y, physics)

    out["deepinv DiffPIR"] = run_diffpir
    return out


def sampler_rows(quick: bool, device, deepinv_only: bool = False) -> list[dict]:
    from invdiff.samplers import make
    from invdiff.metrics import psnr, ssim
    from invdiff.tasks import TASKS, make_task, sampler_settings

    rows = []
    nfes = (10, 25) if quick else (25, 100, 250, 1000)
    n_images = 1 if quick else 2
    for task, spec in TASKS.items():
        prior, physics, x, y = make_task(task, n_images, device=device, seed=0)
        view = (lambda t: t.pow(2).sum(1, keepdim=True).sqrt()) if spec["magnitude"] else (lambda t: t)
        for nfe in nfes:
            methods = {}
            for name, label in () if deepinv_only else (("dps", "DPS"), ("red-diff", "RED-Diff"), ("dds", "DDS")):
                methods[label] = (make(name, prior, progress=False, **{**sampler_settings(task, name), "steps": nfe}), 1)
            smc = {k: v for k, v in sampler_settings(task, "smc").items() if k != "particles"}
            if not deepinv_only:
                methods["SMC ensemble (8)"] = (make("smc", prior, progress=False, **{**smc, "steps": max(nfe // 8, 2)}), 8)
            for label, (sampler, particles) in methods.items():
                g = torch.Generator().manual_seed(0)
                t = time.perf_counter()
                res = sampler.sample(y, physics, n_samples=particles, generator=g)
                sec = time.perf_counter() - t
                a, b = view(res.mean()), view(x)
                rows.append(dict(task=task, method=label, nfe_total=int(res.nfe) * particles, psnr=float(psnr(a, b).mean()),
                                 ssim=float(ssim(a, b).mean()), seconds=round(sec, 2)))
            for label, fn in _deepinv_methods(prior, task, nfe).items():
                if isinstance(fn, Exception):
                    rows.append(dict(task=task, method=label, nfe_total=nfe, error=f"{type(fn).__name__}: {fn}"[:120]))
                    continue
                g = torch.Generator().manual_seed(0)
                t = time.perf_counter()
                try:
                    x_hat = fn(y, physics, g)
                except Exception as e:  # pragma: no cover - report, do not hide
                    rows.append(dict(task=task, method=label, nfe_total=nfe, error=f"{type(e).__name__}: {e}"[:120]))
                    continue
                sec = time.perf_counter() - t
                a, b = view(x_hat.detach()), view(x)
                rows.append(dict(task=task, method=label, nfe_total=nfe, psnr=float(psnr(a, b).mean()),
                                 ssim=float(ssim(a, b).mean()), seconds=round(sec, 2)))
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """Both tables (see the module docstring); ``INVDIFF_BENCH_PRIORS=deepinv`` runs only deepinv's rows
    of ``samplers`` (to redo them after a change of their settings without the hour of invdiff's rows)."""
    import os

    if os.environ.get("INVDIFF_BENCH_PRIORS") == "deepinv":
        return {"samplers": sampler_rows(quick, device, deepinv_only=True)}
    return {"denoising": denoising_rows(quick, device), "samplers": sampler_rows(quick, device)}
