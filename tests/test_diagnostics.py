"""Out-of-domain statistics (invdiff.diagnostics) and hallucination maps (invdiff.hallucination)."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.diagnostics import OODDetector, denoiser_residual, measurement_consistency
from invdiff.diffusion.gmm import Gaussian
from invdiff.hallucination import X0Variance, attach_x0_variance, components, flag_map, score_structures
from invdiff.operators import Matrix


def test_denoiser_residual_closed_form():
    # Gaussian N(0, s^2 I): E||D(x + sigma e) - x||^2 / (d sigma^2) = (a - 1)^2 |x|^2/(d sigma^2) + a^2,
    # a = s^2 / (s^2 + sigma^2); at x = 3 * ones, s = 1, sigma = 0.5: a = 0.8 -> 1.44 + 0.64 = 2.08
    prior = Gaussian(torch.zeros(64, dtype=torch.float64), 1.0)
    x = torch.full((1, 64), 3.0, dtype=torch.float64)
    rho = float(denoiser_residual(prior, x, 0.5, n=32, generator=torch.Generator().manual_seed(0)))
    # 2048 draws: the cross term 2 a (a - 1) x e / sigma has sd 1.92 / sqrt(2048) = 0.042, the
    # chi^2 term 0.64 sqrt(2 / 2048) = 0.02: 5 sd of their sum
    assert rho == pytest.approx(2.08, abs=5 * math.hypot(1.92 / math.sqrt(2048), 0.64 * math.sqrt(2 / 2048)))


def test_measurement_consistency_is_chi2_per_dof():
    A = torch.randn(200, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    physics = Matrix(A, sigma=0.1)
    x = torch.randn(3, 10, dtype=torch.float64)
    y = x @ A.T + 0.1 * torch.randn(3, 200, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = measurement_consistency(y, physics, x)
    assert (c - 1).abs().max() < 5 * math.sqrt(2 / 200)  # chi^2_200 / 200: sd 0.1


def test_ood_detector_flags_far_data():
    prior = Gaussian(torch.zeros(32, dtype=torch.float64), 1.0)
    physics = Matrix(torch.eye(32, dtype=torch.float64), sigma=0.05)
    g = torch.Generator().manual_seed(0)
    x_in = torch.randn(16, 32, generator=g, dtype=torch.float64)
    det = OODDetector(prior, sigma=0.2, n=4).fit(physics.A(x_in), physics, generator=g)
    x_out = 6 * torch.randn(4, 32, generator=g, dtype=torch.float64)  # 6x the prior's scale
    res_in = det.score(physics.A(torch.randn(4, 32, generator=g, dtype=torch.float64)), physics, generator=g)
    res_out = det.score(physics.A(x_out), physics, generator=g)
    assert bool(res_out["flag"].all()) and not bool(res_in["flag"].any())
    with pytest.raises(ValueError, match="fit"):
        OODDetector(prior).score(x_in, physics)


def test_x0_variance_and_structures():
    rec = X0Variance(10, 0.3)
    vals = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    for i in range(10):
        rec.update(i, vals[i])
    assert torch.allclose(rec.variance(), vals[7:].var(0, unbiased=False), atol=1e-6)
    truth, recon = torch.zeros(16, 16), torch.zeros(16, 16)
    recon[2:5, 2:5] = 1.0  # a hallucinated blob
    recon[10:13, 10:13] = 1.0  # another
    flags = torch.zeros(16, 16, dtype=torch.bool)
    flags[3, 3] = True  # touches only the first
    true_mask = torch.zeros(16, 16, dtype=torch.bool)
    true_mask[8, 0:2] = True
    row = score_structures(recon, truth, flags, true_mask)
    assert (row["hallucinated"], row["caught"], row["true_structures"], row["true_flagged"]) == (2, 1, 1, 0)
    assert len(components(flag_map(torch.ones(4, 4), 0.5))) == 1


def test_attach_x0_variance_on_dps():
    from invdiff.samplers import DPS

    prior = Gaussian(torch.zeros(2), 1.0)
    s = attach_x0_variance(DPS(prior, steps=8, progress=False), 0.5)
    out = s.sample(torch.ones(1, 1), Matrix(torch.eye(2)[:1], sigma=0.1), n_samples=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.trace["x0_var"].shape == out.samples.shape and out.nfe == 8
