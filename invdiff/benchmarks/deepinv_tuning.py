"""How deepinv's settings in :data:`invdiff.tasks.DEEPINV_SETTINGS` were chosen.

The same protocol as invdiff's own settings: validation phantoms (the training generators at seed
999, 2 images, never the held-out test set), 100 steps, PSNR (on the magnitude for MRI), one grid
per method. DiffPIR runs on the data mapped to [0, 1] (:func:`invdiff.interop.deepinv_diffpir`).

Run ``python -m invdiff.benchmarks.deepinv_tuning OUT [ct,mri] [diffpir,dps]``: writes ``OUT/deepinv_tuning.{md,csv}``
(about 15 minutes of one CPU core; most of it DiffPIR on CT, whose proximal step runs conjugate
gradients through the Radon transform).
"""
from __future__ import annotations

import itertools
import time

import torch

GRIDS = {
    "diffpir": [dict(lambda_=lam, zeta=zeta) for lam, zeta in itertools.product((1.0, 7.0), (0.1, 0.3, 0.9, 1.0))],
    "dps": [dict(weight=w) for w in (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)],
}
STEPS = 100


def tuning_rows(tasks=("ct", "mri"), methods=tuple(GRIDS)) -> list[dict]:
    from invdiff.benchmarks.uncertainty import _setup
    from invdiff.interop import deepinv_diffpir, deepinv_dps
    from invdiff.metrics import psnr
    from invdiff.tasks import TASKS

    rows = []
    for task in tasks:
        spec = TASKS[task]
        prior, x, physics, y, _ = _setup(task, 2, validation=True)
        view = (lambda t: t.pow(2).sum(1, keepdim=True).sqrt()) if spec["magnitude"] else (lambda t: t)
        for method, grid in ((m, GRIDS[m]) for m in methods):
            for settings in grid:
                t = time.perf_counter()
                if method == "diffpir":
                    torch.manual_seed(0)
                    x_hat = deepinv_diffpir(prior, spec["op_kwargs"]["sigma"], STEPS, data_range=spec["data_range"],
                                            **settings)(y, physics)
                else:
                    x_hat = deepinv_dps(prior, STEPS, **settings)(y, physics, seed=0)
                rows.append(dict(task=task, method=f"deepinv {method}", steps=STEPS, settings=str(settings),
                                 psnr=round(float(psnr(view(x_hat), view(x)).mean()), 2),
                                 seconds=round(time.perf_counter() - t, 1)))
                print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    import sys

    from invdiff.benchmarks.table import write_table

    torch.set_num_threads(1)
    tasks = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("ct", "mri")
    methods = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else tuple(GRIDS)
    print(write_table(tuning_rows(tasks, methods), sys.argv[1], "deepinv_tuning"))
