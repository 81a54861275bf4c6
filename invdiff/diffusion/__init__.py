"""Diffusion priors ``D(x, sigma)``: noise schedules, network parameterisations, exact Gaussian
(mixture) priors, and unconditional ODE/SDE solvers.

>>> import torch
>>> from invdiff.diffusion import Gaussian, karras_sigmas, sample
>>> prior = Gaussian(torch.zeros(2), 1.0)
>>> x = 80.0 * torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
>>> sample(prior, x, karras_sigmas(10), method="dpmpp_2m").x.shape
torch.Size([3, 2])
"""
from __future__ import annotations

from invdiff.diffusion.denoiser import Denoiser, expand_sigma, score
from invdiff.diffusion.gmm import Gaussian, GaussianMixture
from invdiff.diffusion.parameterization import Parameterized, wrap
from invdiff.diffusion.schedules import VPSchedule, ddpm_sigmas, karras_sigmas, loglinear_sigmas, vp_sigmas
from invdiff.diffusion.solvers import METHODS, Solver, SolverResult, make_solver, sample

__all__ = [
    "Denoiser",
    "expand_sigma",
    "score",
    "Gaussian",
    "GaussianMixture",
    "Parameterized",
    "wrap",
    "VPSchedule",
    "ddpm_sigmas",
    "karras_sigmas",
    "loglinear_sigmas",
    "vp_sigmas",
    "METHODS",
    "Solver",
    "SolverResult",
    "make_solver",
    "sample",
]

# Networks, EDM preconditioning, training and the shipped priors (issue 5).
from invdiff.diffusion.networks import MLP, UNet, UNet1D, build_network  # noqa: E402
from invdiff.diffusion.edm import EDMPrecond, edm_loss  # noqa: E402
from invdiff.diffusion.training import TrainConfig, load_checkpoint, train  # noqa: E402
from invdiff.diffusion.zoo import load_prior  # noqa: E402

__all__ += ["MLP", "UNet", "UNet1D", "build_network", "EDMPrecond", "edm_loss", "TrainConfig", "load_checkpoint", "train", "load_prior"]
