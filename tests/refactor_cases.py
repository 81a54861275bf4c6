"""Fixed-seed cases whose samples must stay bit-identical across refactors of the sampler core.

``tests/data/sampler_reference.safetensors`` was written by ``python tests/refactor_cases.py``
on commit d2e2afc (before the sampler-core v2 refactor, issue 10); ``tests/test_refactor.py``
reruns the same cases and compares bit for bit. Regenerate it only when a change of the
samples is intended, and say why in the commit.
"""
from __future__ import annotations

import math

import torch


def _mixture_problem():
    from invdiff.diffusion.gmm import GaussianMixture
    from invdiff.operators import Matrix

    g = torch.Generator().manual_seed(3)
    d = 6
    means = 2.0 * torch.randn(3, d, generator=g, dtype=torch.float64)
    prior = GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), means, 0.25)
    A = torch.randn(3, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    physics = Matrix(A, sigma=0.1)
    x = prior.sample(2, generator=g)
    y = physics.A(x) + 0.1 * torch.randn(2, 3, generator=g, dtype=torch.float64)
    return prior, physics, y


def _poisson_problem():
    import deepinv as dinv

    from invdiff.diffusion.gmm import Gaussian

    prior = Gaussian(torch.full((5,), 2.0, dtype=torch.float64), 0.5)
    physics = dinv.physics.Denoising(noise_model=dinv.physics.PoissonNoise(gain=0.1))
    y = torch.tensor([[1.9, 2.2, 1.5, 2.8, 2.0]], dtype=torch.float64)
    return prior, physics, y


def _mri_problem():
    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import test_set

    prior = invdiff.load_prior("mri-phantom-64")
    physics = operators.make("mri-4x", size=64, sigma=0.02, generator=torch.Generator().manual_seed(0))
    x = test_set("mri-phantom", 1, 64)
    return prior, physics, physics(x)


def cases():
    """name -> (sampler factory, problem factory, n_samples)."""
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.samplers import DPS, REDDiff, SMCEnsemble, TwistedSMC

    return {
        "dps_mixture": (lambda p: DPS(p, steps=30, zeta=0.5, progress=False), _mixture_problem, 4),
        "dps_squared_dpmpp": (lambda p: DPS(p, steps=20, zeta=0.002, guidance="squared", method="dpmpp_2m",
                                            sigmas=karras_sigmas(20, 0.01, 20.0), progress=False), _mixture_problem, 3),
        "dps_poisson": (lambda p: DPS(p, steps=20, zeta=0.3, progress=False), _poisson_problem, 3),
        "red_mixture": (lambda p: REDDiff(p, steps=30, progress=False), _mixture_problem, 2),
        "red_poisson": (lambda p: REDDiff(p, steps=20, progress=False), _poisson_problem, 2),
        "smc_exact": (lambda p: SMCEnsemble(p, steps=20, sigma_max=20.0, progress=False), _mixture_problem, 16),
        "smc_fit": (lambda p: SMCEnsemble(p, steps=20, sigma_max=20.0, data_scale=None, progress=False), _mixture_problem, 16),
        "smc_explicit": (lambda p: SMCEnsemble(p, steps=20, sigma_max=20.0, split="explicit", progress=False), _mixture_problem, 16),
        "smc_poisson": (lambda p: SMCEnsemble(p, steps=15, sigma_max=10.0, progress=False), _poisson_problem, 8),
        "tds_mixture": (lambda p: TwistedSMC(p, steps=20, sigma_max=20.0, progress=False), _mixture_problem, 16),
        "dps_mri": (lambda p: DPS(p, sigmas=karras_sigmas(4, 0.002, 80.0), zeta=2.0, progress=False), _mri_problem, 2),
        "red_mri": (lambda p: REDDiff(p, steps=4, lam_ref=0.02, progress=False), _mri_problem, 1),
        "smc_mri": (lambda p: SMCEnsemble(p, steps=3, sigma_max=10.0, progress=False), _mri_problem, 2),
    }


def run_case(name: str) -> dict[str, torch.Tensor]:
    make_sampler, make_problem, n = cases()[name]
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prior, physics, y = make_problem()
        out = make_sampler(prior).sample(y, physics, n_samples=n, generator=torch.Generator().manual_seed(11))
    finally:
        torch.set_num_threads(n_threads)
    res = {f"{name}.samples": out.samples.detach().contiguous()}
    if out.log_weights is not None:
        res[f"{name}.log_weights"] = out.log_weights.detach().contiguous()
    return res


if __name__ == "__main__":
    from pathlib import Path

    from safetensors.torch import save_file

    tensors = {}
    for name in cases():
        tensors.update(run_case(name))
        print(name, "done")
    save_file(tensors, str(Path(__file__).parent / "data" / "sampler_reference.safetensors"))
