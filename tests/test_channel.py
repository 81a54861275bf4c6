"""HPSM channels, the hybrid-beamforming operator and the classical estimators, against exact references."""
from __future__ import annotations

import math

import pytest
import torch

from invdiff.datasets.channels import HPSMConfig, hpsm_channels, make_generator, steering_vector, to_complex, to_real
from invdiff.diffusion.gmm import Gaussian
from invdiff.operators.channel import HybridBeamforming, make_channel_hybrid_bf, sigma_from_snr
from invdiff.wireless.estimators import (
    LMMSE, angular_dictionary, array_positions, kron_dictionary, ls_nmse, omp, polar_dictionary,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ channels
def _planar_los(geo, cfg):
    """The far-field LoS formula H = exp(-j k R) a_r(mu_r) a_t(mu_t)^T from the drawn angles:
    mu_t = sin(psi) (Tx axis (0, 1)), mu_r = -sin(beta) (Rx broadside turned by beta)."""
    v_r, u_r = cfg.offsets("r")
    v_t, u_t = cfg.offsets("t")
    pos_r, pos_t = (v_r[:, None] + u_r).reshape(-1), (v_t[:, None] + u_t).reshape(-1)
    a_r = steering_vector(-torch.sin(geo["beta"]), pos_r, cfg.wavelength)
    a_t = steering_vector(torch.sin(geo["psi"]), pos_t, cfg.wavelength)
    H = torch.exp(-1j * 2 * math.pi / cfg.wavelength * geo["R"])[:, None, None] * a_r[:, :, None] * a_t[:, None, :]
    return H * math.sqrt(cfg.nr * cfg.nt) / H.flatten(1).norm(dim=1)[:, None, None]


@pytest.mark.parametrize("model,R,tol", [("planar", 5.0, 1e-10), ("hpsm", 1e5, 1e-3), ("spherical", 1e5, 1e-3)])
def test_far_field_equals_planar_steering_formula(model, R, tol):
    cfg = HPSMConfig(n_scatter=0, distance=(R, R), model=model)
    H, geo = hpsm_channels(3, cfg, generator=_gen(1), dtype=torch.float64, return_geometry=True)
    ref = _planar_los(geo, cfg)
    err = float((to_complex(H) - ref).flatten(1).norm(dim=1).max()) / math.sqrt(cfg.nr * cfg.nt)
    assert err < tol


def test_spherical_model_is_exact_per_antenna_distance():
    cfg = HPSMConfig(n_scatter=0, distance=(3.0, 3.0), model="spherical", normalize="none")
    H, geo = hpsm_channels(2, cfg, generator=_gen(2), dtype=torch.float64, return_geometry=True)
    v_r, u_r = cfg.offsets("r")
    v_t, u_t = cfg.offsets("t")
    pos_r = geo["c_r"][:, None, :] + (v_r[:, None] + u_r).reshape(-1)[None, :, None] * geo["e_r"][:, None, :]
    pos_t = torch.stack([torch.zeros(cfg.nt, dtype=torch.float64), (v_t[:, None] + u_t).reshape(-1)], -1)
    d = (pos_r[:, :, None, :] - pos_t[None, None]).norm(dim=-1)
    lam = cfg.wavelength
    kappa = cfg.absorption_db_per_km / 1000 * math.log(10) / 10  # power attenuation per metre
    ref = lam / (4 * math.pi * d) * torch.exp(-kappa * d / 2 - 1j * 2 * math.pi / lam * d)
    assert torch.allclose(to_complex(H), ref, rtol=1e-9, atol=1e-15)


def test_hpsm_is_near_field_accurate_where_planar_fails():
    """In the near field of the array (3 m < Rayleigh distance 6.8 m at 60 GHz) HPSM stays within 1% of
    the exact spherical model while the planar model is off by more than 10%."""
    kw = dict(n_scatter=0, distance=(3.0, 3.0), normalize="none")
    H = {m: to_complex(hpsm_channels(4, generator=_gen(3), dtype=torch.float64, model=m, **kw)) for m in ("hpsm", "planar", "spherical")}
    rel = {m: float((H[m] - H["spherical"]).norm() / H["spherical"].norm()) for m in ("hpsm", "planar")}
    assert rel["hpsm"] < 0.01 and rel["planar"] > 0.1


def test_channels_normalised_seeded_and_presets():
    for preset in ("60ghz", "0.3thz"):
        sample = make_generator(preset=preset)
        H1, H2 = sample(5, generator=_gen(4)), sample(5, generator=_gen(4))
        assert H1.shape == (5, 2, 16, 16) and torch.equal(H1, H2)
        assert torch.allclose((H1.double() ** 2).sum((1, 2, 3)), torch.full((5,), 256.0, dtype=torch.float64), rtol=1e-5)
    with pytest.raises(ValueError, match="preset"):
        make_generator(preset="28ghz")
    with pytest.raises(ValueError, match="model"):
        HPSMConfig(model="curved")


# ------------------------------------------------------------------------------ operator
def test_operator_adjoint_real_matrix_and_prox():
    op = make_channel_hybrid_bf(nr=8, nt=8, frames=8, rf_chains=4, tx_rf_chains=2, bits=3, seed=1)
    x, y = torch.randn(4, *op.x_shape, generator=_gen(5)), torch.randn(4, *op.y_shape, generator=_gen(6))
    lhs, rhs = (op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum()
    assert float((lhs - rhs).abs() / lhs.abs()) < 1e-5
    R = op.real_matrix()
    xd = x.double()
    assert torch.allclose(op.A(xd).flatten(1), xd.flatten(1) @ R.T, atol=1e-12)
    z, yd, g = torch.randn(4, *op.x_shape, dtype=torch.float64), y.double(), torch.rand(4, dtype=torch.float64)
    p = op.prox_l2(z, yd, g)
    grad = g.reshape(-1, 1, 1, 1) * op.A_adjoint(op.A(p) - yd) + (p - z)
    assert float(grad.abs().max()) < 1e-10
    # quantised phase shifters: constant modulus, phases on 2^bits levels (before whitening)
    raw = HybridBeamforming(nr=8, nt=8, frames=2, rf_chains=1, tx_rf_chains=1, bits=2, whiten=False, seed=0)
    assert torch.allclose(raw.Phi.abs(), torch.full_like(raw.Phi.abs(), 1 / 8), rtol=1e-12)


def test_operator_bad_input():
    with pytest.raises(ValueError, match="rf_chains"):
        HybridBeamforming(nr=4, rf_chains=8)
    with pytest.raises(ValueError, match="one of"):
        HybridBeamforming(sigma=0.1, snr_db=10.0)
    op = HybridBeamforming(nr=4, nt=4, frames=4, rf_chains=2)
    with pytest.raises(ValueError, match="shape"):
        op.A(torch.zeros(1, 2, 4, 5))


def test_ls_nmse_closed_form():
    """LS NMSE = sigma_n^2 tr((Phi^H Phi)^-1) / E||h||^2 within a 4-sigma Monte-Carlo bound (2000 draws)."""
    op = HybridBeamforming(nr=8, nt=8, frames=32, rf_chains=4, snr_db=10.0, seed=2, generator=_gen(7))
    H = hpsm_channels(1, generator=_gen(8), nr_subarrays=2, nt_subarrays=2).double().expand(2000, -1, -1, -1)
    err = ((op.baseline(op(H)) - H) ** 2).sum((1, 2, 3)) / 64.0  # E||h||^2 = Nr Nt = 64
    expected = ls_nmse(op.Phi, op.noise_var, 64.0)
    assert abs(float(err.mean()) - expected) < 4 * float(err.std()) / math.sqrt(err.numel())


def _circular_gaussian(N, gen):
    G = torch.randn(N, N, generator=gen, dtype=torch.complex128) / math.sqrt(N)
    C = G @ G.conj().T + 0.05 * torch.eye(N, dtype=torch.complex128)
    real = 0.5 * torch.cat([torch.cat([C.real, -C.imag], 1), torch.cat([C.imag, C.real], 1)], 0)
    return C, real


def test_lmmse_equals_exact_gaussian_posterior_mean_and_its_nmse():
    """With a circular Gaussian channel prior the exact posterior mean (GaussianMixture.posterior on the
    real form) equals the complex LMMSE estimate, and the LMMSE NMSE equals its closed form."""
    nr = nt = 4
    N = nr * nt
    C, real_cov = _circular_gaussian(N, _gen(9))
    op = HybridBeamforming(nr=nr, nt=nt, frames=4, rf_chains=2, tx_rf_chains=2, snr_db=5.0, seed=3, generator=_gen(10))
    nv = op.noise_var
    s = math.sqrt(nv / 2)  # per (real, imag) channel
    prior = Gaussian(torch.zeros(2, nr, nt, dtype=torch.float64), real_cov)
    lm = LMMSE(torch.zeros(N, dtype=torch.complex128), C)
    x = prior.sample(1, generator=_gen(11))
    y = op(x)
    post = prior.posterior(op.real_matrix(), y.flatten(1), s)
    z = to_complex(y).reshape(1, -1)
    h_lmmse = to_real(lm(z, op.Phi, nv).reshape(1, nr, nt), torch.float64)
    assert torch.allclose(post.mean, h_lmmse[0], atol=1e-10)
    # Monte-Carlo NMSE over 4000 prior draws vs the closed form
    X = prior.sample(4000, generator=_gen(12))
    Z = to_complex(op(X)).reshape(4000, -1)
    err = (lm(Z, op.Phi, nv) - to_complex(X).reshape(4000, -1)).abs().pow(2).sum(1)
    tr = float(C.diagonal().real.sum())
    assert abs(float(err.mean()) / tr - lm.nmse(op.Phi, nv)) < 4 * float(err.std()) / tr / math.sqrt(4000)


def test_omp_recovers_sparse_channel_noiseless():
    cfg = HPSMConfig(nr_subarrays=2, nt_subarrays=2)
    pos = array_positions(2, 4, 0.5, cfg.subarray_spacing, cfg.wavelength)
    for psi in (angular_dictionary(pos, cfg.wavelength, 2), polar_dictionary(pos, cfg.wavelength, rings=2)):
        Psi = kron_dictionary(psi, psi)
        op = HybridBeamforming(nr=8, nt=8, frames=16, rf_chains=4, seed=4)
        c = torch.zeros(2, Psi.shape[1], dtype=torch.complex128)
        c[0, [3, 40]] = torch.tensor([1.0 + 0.5j, -0.7j], dtype=torch.complex128)
        c[1, [100]] = 2.0
        y = c @ (op.Phi @ Psi).T
        c_hat = omp(y, op.Phi @ Psi, noise_var=1e-20, max_atoms=6)
        assert torch.allclose(c_hat @ Psi.T, c @ Psi.T, atol=1e-8)


def test_sigma_from_snr_and_complex_noise():
    assert math.isclose(sigma_from_snr(20.0) ** 2, 0.01)
    op = HybridBeamforming(nr=4, nt=4, frames=256, rf_chains=4, snr_db=0.0, generator=_gen(14))
    noise = op(torch.zeros(64, *op.x_shape, dtype=torch.float64))
    per_channel = float(noise.var())  # sigma_n^2 / 2 = 0.5 per (real, imag) channel, 131072 draws
    assert abs(per_channel - 0.5) < 4 * 0.5 * math.sqrt(2 / noise.numel())
    assert op.noise_var == 1.0
    op = HybridBeamforming(nr=4, nt=4, frames=512, rf_chains=1, tx_rf_chains=1, seed=5)
    H = hpsm_channels(64, generator=_gen(13), nr_subarrays=1, nt_subarrays=1, subarray_spacing=2.0)
    power = float((op.A(H) ** 2).sum(1).mean())  # E|w^H H f|^2 per complex measurement = 1
    assert abs(power - 1.0) < 0.1


def test_operator_noise_gives_the_complex_gaussian_likelihood():
    from invdiff.samplers.likelihood import ComplexGaussianLikelihood, likelihood_from

    op = HybridBeamforming(nr=4, nt=4, frames=4, rf_chains=2, snr_db=10.0)
    lik = likelihood_from(op)
    assert isinstance(lik, ComplexGaussianLikelihood) and math.isclose(float(lik.sigma) ** 2, op.noise_var)


def test_annealed_langevin_mean_matches_exact_posterior_mean():
    """Annealed Langevin with the exact Gaussian denoiser: the mean of 1000 chains is the exact posterior
    mean (= the LMMSE estimate) within 4 standard errors plus an annealing-bias budget of 0.25 posterior
    std (measured bias 0.15 std at these settings with 4000 chains)."""
    from invdiff.samplers import make

    C, real_cov = _circular_gaussian(4, _gen(9))
    prior = Gaussian(torch.zeros(2, 2, 2, dtype=torch.float64), real_cov)
    op = HybridBeamforming(nr=2, nt=2, frames=1, rf_chains=2, tx_rf_chains=1, snr_db=10.0, seed=3, generator=_gen(10))
    y = op(prior.sample(1, generator=_gen(11)))
    post = prior.posterior(op.real_matrix(), y.flatten(1), math.sqrt(op.noise_var / 2))
    n = 1000
    out = make("annealed-langevin", prior, levels=100, steps_per_level=3, eps=1e-4, progress=False).sample(
        y, op, n_samples=n, generator=_gen(1))
    assert out.nfe == 300
    std = post.covariance.diagonal().reshape(2, 2, 2).sqrt()
    assert bool(((out.samples.mean(0)[0] - post.mean).abs() <= (0.25 + 4 / math.sqrt(n)) * std).all())
    h_lmmse = LMMSE(torch.zeros(4, dtype=torch.complex128), C)(to_complex(y).reshape(1, -1), op.Phi, op.noise_var)
    assert torch.allclose(to_real(h_lmmse.reshape(1, 2, 2), torch.float64)[0], post.mean, atol=1e-10)


def test_simulate_channels_chunk_independent_seeded_and_resumable(tmp_path):
    xr = pytest.importorskip("xarray")
    from invdiff.datasets.channel_sim import simulate_channels

    a = simulate_channels(5, seed=3, out=tmp_path / "a.nc", chunk=2, progress=False)
    b = simulate_channels(5, seed=3, out=tmp_path / "b.nc", chunk=5, progress=False)
    with xr.open_dataset(a, engine="h5netcdf") as da, xr.open_dataset(b, engine="h5netcdf") as db:
        assert (da["H"].values == db["H"].values).all() and da.attrs["seed"] == 3
        ref = hpsm_channels(1, generator=torch.Generator().manual_seed(3 * 2**32 + 4))
        assert (da["H"].values[4] == ref[0].numpy()).all()
    assert not (tmp_path / "a.nc.partial").exists()
    # an interrupted run (one finished chunk) resumes with the same arguments, refuses others
    partial = tmp_path / "c.nc.partial"
    simulate_channels(2, seed=3, out=tmp_path / "c0.nc", chunk=2, progress=False)
    partial.mkdir()
    import json, shutil
    (partial / "manifest.json").write_text(json.dumps({"other": 1}))
    shutil.copy(tmp_path / "c0.nc", partial / "chunk_00000000_00000002.nc")
    with pytest.raises(ValueError, match="interrupted run"):
        simulate_channels(5, seed=3, out=tmp_path / "c.nc", chunk=2, progress=False)


# TR 38.901 Table 7.7.1-1 (CDL-A): normalized delays and powers (dB) of the 23 clusters
_CDL_A = (
    [0.0, 0.3819, 0.4025, 0.5868, 0.4610, 0.5375, 0.6708, 0.5750, 0.7618, 1.5375, 1.8978, 2.2242, 2.1718, 2.4942,
     2.5119, 3.0582, 4.0810, 4.4579, 4.5695, 4.7966, 5.0066, 5.3043, 9.6586],
    [-13.4, 0.0, -2.2, -4.0, -6.0, -8.2, -9.9, -10.5, -7.5, -15.9, -6.6, -16.7, -12.4, -15.2, -10.8, -11.3, -12.7,
     -16.2, -18.3, -18.9, -16.6, -19.9, -29.7],
)


def test_cdl_power_delay_profile_matches_the_standard():
    """Sionna's CDL-A (1 x 1 omni): path delays = the table's normalized delays x DS, and the mean path
    powers over 300 draws = the table's normalized powers within 4 standard errors."""
    pytest.importorskip("sionna.phy.channel.tr38901")
    from invdiff.datasets.cdl import cdl_channels, cdl_paths

    ds = 100e-9
    a, tau = cdl_paths(300, "A", nr=1, nt=1, delay_spread=ds, seed=0)
    delays, powers = (torch.tensor(v, dtype=torch.float64) for v in _CDL_A)
    order = torch.argsort(delays)
    assert torch.allclose(tau[0] / ds, delays[order], atol=1e-6)
    p = a[:, 0, 0, :].abs().pow(2)
    p = p / p.mean(0).sum()
    ref = 10 ** (powers[order] / 10)
    ref = ref / ref.sum()
    assert bool(((p.mean(0) - ref).abs() <= 4 * p.std(0) / math.sqrt(300) + 1e-4).all())
    H = cdl_channels(2, "C", nr=4, nt=4, seed=1)
    assert H.shape == (2, 2, 4, 4) and torch.allclose((H.double() ** 2).sum((1, 2, 3)), torch.full((2,), 16.0, dtype=torch.float64))


def test_shipped_channel_prior_beats_the_best_linear_denoiser():
    """hpsm-60ghz-16 loads offline with x_shape (2, 16, 16) and its card, and denoises held-out HPSM channels
    at sigma = 0.3 better than the exact denoiser of the Gaussian with the channels' sample moments (the best
    linear denoiser), on 64 channels with a 4-standard-error margin on the paired difference."""
    import invdiff
    from invdiff.diffusion.zoo import card

    D = invdiff.load_prior("hpsm-60ghz-16")
    c = card("hpsm-60ghz-16")
    assert D.x_shape == (2, 16, 16) and all(k in c for k in ("command", "final_loss", "steps", "seed", "data"))
    fit = hpsm_channels(4000, generator=_gen(21), dtype=torch.float64)
    G = Gaussian(fit.mean(0), torch.cov(fit.flatten(1).T))
    x0 = hpsm_channels(64, generator=_gen(22), dtype=torch.float64)
    x = x0 + 0.3 * torch.randn(x0.shape, generator=_gen(23), dtype=torch.float64)
    with torch.no_grad():
        e_net = ((D(x.float(), 0.3).double() - x0) ** 2).flatten(1).sum(1)
    e_lin = ((G(x, 0.3) - x0) ** 2).flatten(1).sum(1)
    d = e_lin - e_net
    assert float(d.mean()) > 4 * float(d.std()) / math.sqrt(64)
