"""Why DDS does not improve past about 100 steps: the data residual against the noise level.

On the demo's CT task (2 held-out phantoms, 30 views, noise ``sigma_y = 0.01``) DDS runs at its
defaults with more steps and with one CG step per level instead of two. For each run: PSNR and
the data residual of the posterior mean relative to the noise, :math:`\\|A\\hat x - y\\| / (\\sigma_y
\\sqrt m)`. The truth scores about 1 (the noise); a reconstruction below 1 fits the noise.

Run ``python -m invdiff.benchmarks.dds_steps OUT``: writes ``OUT/dds_steps.{md,csv}`` (about 7
minutes of one CPU core).
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


if __name__ == "__main__":
    import sys

    from invdiff.benchmarks.table import write_table

    torch.set_num_threads(1)
    print(write_table(rows(), sys.argv[1], "dds_steps"))
