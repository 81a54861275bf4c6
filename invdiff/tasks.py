"""The demo's reconstruction tasks as a library: data, operator, prior and each sampler's settings.

Used by ``invdiff demo``, the benchmarks and the tutorials (no library module imports the CLI).

- ``ct``: sparse-view parallel-beam CT, 30 views on [0, 180), Gaussian noise 0.01; prior
  ``ct-phantom-64``; baseline: filtered back-projection.
- ``mri``: single-coil Cartesian MRI, 4x variable-density lines, noise 0.01; prior
  ``mri-phantom-64``; baseline: zero-filled inverse FFT. Metrics on the magnitude image.

Sampler settings per task are keyword arguments of :func:`invdiff.samplers.make`; how they were
chosen is recorded in ``docs/demo.md`` (validation phantoms, never the held-out test set).

>>> sorted(TASKS)
['ct', 'mri']
>>> sampler_settings("ct", "dps")["zeta"]
2.0
"""
from __future__ import annotations

import copy

__all__ = ["TASKS", "SAMPLER_SETTINGS", "DEEPINV_SETTINGS", "UNCERTAINTY", "UNCERTAINTY_SETTINGS", "sampler_settings",
           "deepinv_settings", "uncertainty_settings", "make_task"]

TASKS = {
    "ct": dict(prior="ct-phantom-64", family="ct-phantom", operator="ct-sparse-view",
               op_kwargs=dict(size=64, views=30, sigma=0.01), tv_lambda=0.001, magnitude=False, baseline="FBP",
               data_range=(0.0, 1.0)),
    "mri": dict(prior="mri-phantom-64", family="mri-phantom", operator="mri-4x",
                op_kwargs=dict(size=64, sigma=0.01), tv_lambda=0.015, magnitude=True, baseline="zero-filled",
                data_range=(-1.0, 1.0)),  # real and imaginary channels of a complex image of modulus <= 1
}

# name -> task -> settings; "particles" is n_samples, the rest go to invdiff.samplers.make
SAMPLER_SETTINGS = {
    "dps": {"ct": dict(steps=100, zeta=2.0, schedule="karras"), "mri": dict(steps=100, zeta=1.0, schedule="karras")},
    "red-diff": {"ct": dict(steps=200, lam_ref=0.02), "mri": dict(steps=400, lam_ref=0.05)},
    "smc": {"ct": dict(steps=10, sigma_max=10.0, particles=4), "mri": dict(steps=20, sigma_max=10.0, particles=4)},
    "dds": {"ct": dict(), "mri": dict()},  # its defaults
}
#: deepinv's methods on the same tasks (the comparison of the demo and the benchmarks), their
#: hyperparameters chosen the way ours were: on validation phantoms (seed 999, 2 images, 100 steps),
#: never on the test set (``python -m invdiff.benchmarks.deepinv_tuning``, docs/benchmarks/deepinv-tuning.md).
#: deepinv's defaults (DiffPIR ``lambda_=7, zeta=0.1``, DPS ``weight=1``) score far lower there:
#: DiffPIR 31.1 / 24.7 dB (CT / MRI) against 34.7 / 30.7 tuned, DPS 13.7 / 14.7 against 27.7 / 28.5.
#: DiffPIR on MRI also needs the data mapped to the [0, 1] it assumes (:mod:`invdiff.interop`,
#: ``TASKS[task]["data_range"]``).
DEEPINV_SETTINGS = {
    "diffpir": {"ct": dict(lambda_=1.0, zeta=1.0), "mri": dict(lambda_=1.0, zeta=1.0)},
    "dps": {"ct": dict(weight=300.0), "mri": dict(weight=300.0)},
}
QUICK = {"dps": dict(steps=10), "red-diff": dict(steps=10), "smc": dict(steps=4, particles=2), "dds": dict(steps=10)}

#: the sampler whose posterior spread the demo shows (std map beside the error, their correlation,
#: 90% coverage of the truth): the best-calibrated answer within the demo's time, as measured on the
#: demo tasks against smc-adaptive and DPS at N = 32, with x0_noise from SBC
#: (docs/benchmarks/uncertainty.md)
UNCERTAINTY = "dds"
#: what the demo adds to :data:`UNCERTAINTY`'s settings: 16 independent draws (32 doubled the demo's
#: CPU time: docs/demo.md), with the calibrated spread of DDS (``x0_noise``); ``--quick``: 4 draws
UNCERTAINTY_SETTINGS = {"particles": 16, "x0_noise": True}


def uncertainty_settings(task: str, quick: bool = False) -> dict:
    """Settings of the demo's uncertainty sampler on ``task``: :func:`sampler_settings` of
    :data:`UNCERTAINTY` with :data:`UNCERTAINTY_SETTINGS` (4 draws with ``quick``).

    >>> uncertainty_settings("ct")
    {'particles': 16, 'x0_noise': True}
    """
    return {**sampler_settings(task, UNCERTAINTY, quick), **UNCERTAINTY_SETTINGS, **({"particles": 4} if quick else {})}


def deepinv_settings(task: str, name: str) -> dict:
    """Keyword arguments of deepinv's method ``name`` (``"diffpir"``, ``"dps"``) on ``task``
    (:data:`DEEPINV_SETTINGS`)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    if name not in DEEPINV_SETTINGS:
        raise ValueError(f"deepinv method: expected one of {sorted(DEEPINV_SETTINGS)}, got {name!r}")
    return dict(DEEPINV_SETTINGS[name][task])


def sampler_settings(task: str, name: str, quick: bool = False) -> dict:
    """Settings of sampler ``name`` on ``task`` (``--quick``: a tiny run for tests)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    if name not in SAMPLER_SETTINGS:
        raise ValueError(f"sampler: expected one of {sorted(SAMPLER_SETTINGS)}, got {name!r}")
    s = copy.deepcopy(SAMPLER_SETTINGS[name][task])
    if quick:
        s.update(QUICK[name])
    return s


def make_task(task: str, n_images: int, device="cpu", seed: int = 0):
    """``(prior, physics, x, y)``: the shipped prior, the operator (noise seeded by ``seed``),
    ``n_images`` held-out phantoms and their measurements."""
    import torch

    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import test_set

    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    spec = TASKS[task]
    prior = invdiff.load_prior(spec["prior"], device=device)
    x = test_set(spec["family"], n_images, 64, device=device)
    physics = operators.make(spec["operator"], generator=torch.Generator(device=device).manual_seed(seed),
                             device=device, **spec["op_kwargs"])
    return prior, physics, x, physics(x)
