"""Masked (absorbing-state) discrete diffusion: schedules, tokenisers, the MDLM loss, exact priors,
unconditional samplers and trained networks.

>>> import torch
>>> from invdiff.diffusion.discrete import random_mixture, first_hitting_sample
>>> prior = random_mixture(2, 6, 3, generator=torch.Generator().manual_seed(0))
>>> first_hitting_sample(prior, 4, generator=torch.Generator().manual_seed(1)).tokens.shape
torch.Size([4, 6])
"""
from invdiff.diffusion.discrete.categorical import gumbel, sample_categorical
from invdiff.diffusion.discrete.denoiser import CountingPrior, all_masked, conditionals
from invdiff.diffusion.discrete.exact import FactorizedMixture, all_sequences, empirical_prior, random_mixture
from invdiff.diffusion.discrete.loss import mask_tokens, mdlm_loss
from invdiff.diffusion.discrete.sampling import ancestral_sample, first_hitting_sample
from invdiff.diffusion.discrete.schedules import Cosine, LogLinear, MaskingSchedule, make_schedule
from invdiff.diffusion.discrete.tokenizers import Codebook, intensity_quantizer
from invdiff.diffusion.discrete.vq import PatchCodebook, train_patch_vq

__all__ = [
    "gumbel", "sample_categorical", "CountingPrior", "all_masked", "conditionals", "FactorizedMixture",
    "all_sequences", "empirical_prior", "random_mixture", "mask_tokens", "mdlm_loss", "ancestral_sample",
    "first_hitting_sample", "Cosine", "LogLinear", "MaskingSchedule", "make_schedule", "Codebook",
    "intensity_quantizer", "PatchCodebook", "train_patch_vq",
]
