r"""`invdiff bench prior-size`: a 128 x 128 CT task with a prior trained at 128 and one trained at 64.

Priors: ``ct-phantom-128`` (trained at 128 x 128 by ``invdiff train --config
configs/ct-phantom-128.json``; small, see its card) and ``ct-phantom-64`` used at 128 x 128 on
purpose (:func:`invdiff.diffusion.zoo.use_at_size`, the U-Net is fully convolutional). Task:
sparse-view parallel-beam CT of 128 x 128 held-out phantoms (``test_set``), 60 views (the
demo's 30 views at 64, scaled with the size), Gaussian noise 0.01.

Tables:

- ``prior_size_denoising``: held-out MSE of :math:`D(x_0 + \sigma\varepsilon, \sigma)` per prior
  and :math:`\sigma` (the denoiser is the prior; lower is better).
- ``prior_size_ct128``: PSNR (dB, mean over the test phantoms, of the mean of the draws) of FBP,
  TV (:func:`invdiff.samplers.admm_tv.tv_reconstruct` in 2D, :math:`\lambda` chosen from a grid
  on validation phantoms drawn from another seed) and DDS (its defaults) with each prior.
"""
from __future__ import annotations

import time

import torch

SIGMAS = (0.05, 0.1, 0.2, 0.5)
TV_LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2)
OPERATOR = dict(size=128, views=60, sigma=0.01)


def _priors(device):
    import warnings

    import invdiff

    with warnings.catch_warnings():  # the use at 128 is the point of this benchmark
        warnings.simplefilter("ignore", UserWarning)
        p64 = invdiff.load_prior("ct-phantom-64", device=device, size=128)
    return {"ct-phantom-128": invdiff.load_prior("ct-phantom-128", device=device), "ct-phantom-64 at 128": p64}


def _tv(y, physics, lam, iters):
    from invdiff.samplers.admm_tv import tv_reconstruct

    return tv_reconstruct(y, physics, lam=lam, axes=(2, 3), iters=iters)[0]


def run(out_dir: str = "results/bench", quick: bool = False, device: str = "cpu") -> dict:
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import make_generator, test_set
    from invdiff.metrics import psnr
    from invdiff.samplers import make

    n_test, n_val, n_draws, steps, tv_iters = (2, 1, 1, 10, 20) if quick else (8, 3, 4, 50, 100)
    lambdas = TV_LAMBDAS[1:3] if quick else TV_LAMBDAS
    priors = _priors(device)
    x = test_set("ct-phantom", n_test, 128, device=device)

    den = []
    g = torch.Generator().manual_seed(1)
    noise = [torch.randn(x.shape, generator=g).to(device) for _ in SIGMAS]
    for name, D in priors.items():
        row = {"prior": name, "parameters": sum(p.numel() for p in D.parameters()), "trained steps": D.card["steps"]}
        for sigma, n in zip(SIGMAS, noise):
            with torch.no_grad():
                row[f"MSE sigma={sigma}"] = f"{float((D(x + sigma * n, sigma) - x).pow(2).mean()):.2e}"
        den.append(row)

    physics = operators.make("ct-sparse-view", generator=torch.Generator(device=device).manual_seed(0), device=device, **OPERATOR)
    y = physics(x)
    x_val = make_generator("ct-phantom", size=128)(n_val, generator=torch.Generator().manual_seed(77)).to(device)
    y_val = physics(x_val)
    val = {lam: float(psnr(_tv(y_val, physics, lam, tv_iters), x_val).mean()) for lam in lambdas}
    lam = max(val, key=val.get)

    rows = []

    def add(method, prior, x_hat, seconds, nfe, settings):
        p = psnr(x_hat.clamp(0, 1), x)
        rows.append({"method": method, "prior": prior, "PSNR (dB)": round(float(p.mean()), 2),
                     "PSNR std": round(float(p.std()), 2) if len(p) > 1 else 0.0, "NFE": nfe,
                     "CPU s / image": round(seconds / n_test, 2), "settings": settings})

    t = time.process_time()
    add("FBP", "-", physics.baseline(y), time.process_time() - t, 0, "")
    t = time.process_time()
    add("TV (ADMM)", "-", _tv(y, physics, lam, tv_iters), time.process_time() - t, 0,
        f"lambda {lam:g} (best of {lambdas} on {n_val} validation phantoms), {tv_iters} iterations")
    for name, D in priors.items():
        sampler = make("dds", D, steps=steps, progress=False)
        t = time.process_time()
        out = sampler.sample(y, physics, n_samples=n_draws, generator=torch.Generator().manual_seed(3))
        add("DDS", name, out.mean(), time.process_time() - t, out.nfe, f"{steps} steps, mean of {n_draws} draws")
    return {"prior_size_denoising": den, "prior_size_ct128": rows}
