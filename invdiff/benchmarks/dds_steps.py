"""Why DDS does not improve past about 100 steps: the data residual against the noise level.

On the demo's CT task (2 held-out phantoms, 30 views, noise ``sigma_y = 0.01``) DDS runs at its
defaults with more steps and with one CG step per level instead of two. For each run: PSNR and
the data residual of the posterior mean relative to the noise, :math:`\\|A\\hat x - y\\| / (\\sigma_y
\\sqrt m)`. The truth scores about 1 (the noise); a reconstruction below 1 fits the noise.

Second table, on an exact prior (the 64-phantom Gaussian mixture of ``invdiff bench calibration``,
16 x 16 CT with 8 views as a dense matrix, noise 0.01, 8 problems drawn from the prior, 16 draws
each): the relative error of DDS's posterior mean against the exact posterior mean, for DDS and for
the variant that re-noises the corrected estimate (``renoise_corrected``, :mod:`invdiff.samplers.loop`).
With an exact denoiser a consistent sampler would converge as the steps grow; DDS does not.

Run ``python -m invdiff.benchmarks.dds_steps OUT``: writes ``OUT/dds_steps.{md,csv}`` and
``OUT/dds_steps_exact.{md,csv}`` (about 10 minutes of one CPU core).
"""
from __future__ import annotations

import time

import torch

RUNS = ((50, 2), (100, 2), (250, 2), (1000, 2), (250, 1), (1000, 1))  # (steps, cg_iters)


def residual_ratio(physics, x: torch.Tensor, y: torch.Tensor, sigma_y: float) -> float:
    """Mean over the batch of :math:`\\|A x - y\\| / (\\sigma_y \\sqrt m)`."""
    m = y[0].numel()
    return float((physics.A(x) - y).flatten(1).norm(dim=1).mean() / (sigma_y * m**0.5))


def rows(task: str = "ct", n_images: int = 2) -> list[dict]:
    from invdiff.metrics import psnr
    from invdiff.samplers import make
    from invdiff.tasks import TASKS, make_task

    prior, physics, x, y = make_task(task, n_images, seed=0)
    sigma_y = TASKS[task]["op_kwargs"]["sigma"]
    out = [dict(task=task, method="truth", steps="-", cg_iters="-", psnr="-",
                residual_over_noise=round(residual_ratio(physics, x, y, sigma_y), 3), seconds="-")]
    for steps, cg in RUNS:
        t = time.perf_counter()
        x_hat = make("dds", prior, progress=False, steps=steps, cg_iters=cg).sample(
            y, physics, generator=torch.Generator().manual_seed(0)).mean()
        out.append(dict(task=task, method="DDS", steps=steps, cg_iters=cg, psnr=round(float(psnr(x_hat, x).mean()), 2),
                        residual_over_noise=round(residual_ratio(physics, x_hat, y, sigma_y), 3),
                        seconds=round(time.perf_counter() - t, 1)))
        print(out[-1], flush=True)
    return out


def exact_prior_rows(steps=(25, 50, 100, 250, 1000), n_problems: int = 8, n_draws: int = 16) -> list[dict]:
    from invdiff.benchmarks.calibration import _dense_ct, phantom_mixture
    from invdiff.samplers.dds import DDS

    class DDSRenoiseCorrected(DDS):
        renoise_corrected = True

    sigma_y = 0.01
    prior, physics = phantom_mixture(), _dense_ct(16, 8, sigma_y)
    g = torch.Generator().manual_seed(3)
    x = prior.sample(n_problems, generator=g)
    y = physics.A(x)
    y = y + sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype)  # seeded noise (the operator's is global)
    exact = []
    for b in range(n_problems):
        post = prior.posterior(physics.matrix, y[b], sigma_y)
        w = post.weights / post.weights.sum()
        exact.append((w[:, None] * post.means.flatten(1)).sum(0))
    exact = torch.stack(exact)
    out = [dict(method="exact posterior mean", steps="-", rel_err_to_exact_mean=0.0,
                residual_over_noise=round(residual_ratio(physics, exact, y, sigma_y), 3))]
    for n in steps:
        for label, cls in (("DDS", DDS), ("DDS, corrected estimate re-noised", DDSRenoiseCorrected)):
            mean = cls(prior, steps=n, progress=False).sample(
                y, physics, n_samples=n_draws, generator=torch.Generator().manual_seed(0)).mean()
            out.append(dict(method=label, steps=n, rel_err_to_exact_mean=round(float((mean - exact).norm() / exact.norm()), 4),
                            residual_over_noise=round(residual_ratio(physics, mean, y, sigma_y), 3)))
            print(out[-1], flush=True)
    return out


if __name__ == "__main__":
    import sys

    from invdiff.benchmarks.table import write_table

    torch.set_num_threads(1)
    print(write_table(exact_prior_rows(), sys.argv[1], "dds_steps_exact"))
    if "--exact-only" not in sys.argv:
        print(write_table(rows(), sys.argv[1], "dds_steps"))
