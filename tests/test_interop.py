"""invdiff.interop: deepinv's [0, 1]-range algorithms on data in another range, against exact references."""
import pytest
import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.interop import UnitRangeDenoiser, deepinv_diffpir, unit_range, unit_range_physics
from invdiff.operators import Matrix

LO, HI = -1.0, 1.0
C = HI - LO


def _matrix(m=5, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, generator=g, dtype=torch.float64)


def test_physics_is_affine_map_of_the_original_and_its_adjoint_is_exact():
    M = _matrix()
    physics = Matrix(M, sigma=0.0)
    phys_u = unit_range_physics(physics, (LO, HI))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 8, generator=g, dtype=torch.float64) * C + LO
    u = (x - LO) / C
    # A_u u = A x - A(lo 1)
    torch.testing.assert_close(phys_u.A(u), x @ M.T - (LO * torch.ones(8, dtype=torch.float64)) @ M.T)
    v = torch.randn(3, 5, generator=g, dtype=torch.float64)
    assert torch.allclose((phys_u.A(u) * v).sum(), (u * phys_u.A_adjoint(v)).sum(), rtol=1e-12)


def test_prox_matches_closed_form_ridge_solution():
    M = _matrix()
    phys_u = unit_range_physics(Matrix(M, sigma=0.0), (LO, HI))
    g = torch.Generator().manual_seed(2)
    z = torch.rand(1, 8, generator=g, dtype=torch.float64)
    y = torch.randn(1, 5, generator=g, dtype=torch.float64)
    gamma = 0.7
    # argmin_u ||C M u - y||^2 / 2 + ||u - z||^2 / (2 gamma)
    H = C * C * M.T @ M + torch.eye(8, dtype=torch.float64) / gamma
    exact = torch.linalg.solve(H, C * M.T @ y[0] + z[0] / gamma)
    torch.testing.assert_close(phys_u.prox_l2(z, y, gamma)[0], exact, rtol=1e-6, atol=1e-8)


def test_denoiser_is_the_exact_denoiser_of_the_mapped_prior():
    mean, var = torch.linspace(-0.8, 0.6, 6, dtype=torch.float64), 0.05
    den = UnitRangeDenoiser(Gaussian(mean, var), (LO, HI))
    mapped = Gaussian((mean - LO) / C, var / C**2)  # u = (x - lo) / c
    u = torch.rand(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for s in (0.01, 0.3, 2.0):
        torch.testing.assert_close(den(u, s), mapped(u, s))


def test_measurement_shift_and_bad_ranges():
    M = _matrix()
    physics = Matrix(M, sigma=0.0)
    x = torch.full((1, 8), LO, dtype=torch.float64)
    _, phys_u, y_u = unit_range(Gaussian(torch.zeros(8, dtype=torch.float64), 1.0), physics, physics(x), (LO, HI))
    torch.testing.assert_close(y_u, torch.zeros(1, 5, dtype=torch.float64))  # x = lo maps to u = 0
    for bad in [(1.0, 1.0), (0.0, float("inf")), "ab", (1,)]:
        with pytest.raises(ValueError, match="data_range"):
            UnitRangeDenoiser(None, bad)


def test_diffpir_on_negative_data_needs_the_mapping():
    """Half the coordinates observed with small noise, the other half known only through the prior
    N(-0.5, 0.1^2): without the mapping deepinv's DiffPIR clamps its prior estimate to [0, 1] and the
    unobserved coordinates come out at 0 or above; with it they come out near the prior mean -0.5."""
    d = 16
    prior = Gaussian(torch.full((d,), -0.5), 0.01)
    physics = Matrix(torch.eye(d)[::2], sigma=0.01, generator=torch.Generator().manual_seed(0))
    x = -0.5 + 0.1 * torch.randn(2, d, generator=torch.Generator().manual_seed(4))
    y = physics(x)
    torch.manual_seed(0)
    mapped = deepinv_diffpir(prior, sigma=0.01, steps=20, data_range=(LO, HI))(y, physics)
    torch.manual_seed(0)
    plain = deepinv_diffpir(prior, sigma=0.01, steps=20)(y, physics)
    hidden = slice(1, None, 2)
    assert (mapped - x)[:, ::2].abs().max() < 0.05  # the observed half follows the data
    assert (mapped - x)[:, hidden].abs().mean() < 0.15
    assert plain[:, hidden].min() > -0.05 and (plain - x)[:, hidden].abs().mean() > 0.35


def test_doctest():
    import doctest

    import invdiff.interop

    assert doctest.testmod(invdiff.interop).failed == 0


def test_deepinv_dps_honours_its_seed():
    """deepinv's DPS ignores ``seed`` unless it owns a generator: the same seed must give the same draw,
    another seed another draw."""
    from invdiff.interop import deepinv_dps

    prior = Gaussian(torch.zeros(4), 0.25)
    physics = Matrix(torch.eye(4)[:2], sigma=0.05, generator=torch.Generator().manual_seed(0))
    y = physics(torch.full((1, 4), 0.3))
    run = deepinv_dps(prior, 10, weight=1.0)
    a, b, c = run(y, physics, 1), run(y, physics, 1), run(y, physics, 2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
