"""Tests of invdiff.surrogates: the periodised DWT against PyWavelets, the conditioning, the
conditional sampling loop against an exact Gaussian, shapes, dtypes and bad inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invdiff.surrogates.fno import FNO2d, persistence
from invdiff.surrogates.train import load_model, save_model
from invdiff.surrogates.wavelet import DWT2, BandScaler, analysis_matrix, synthesis_matrix
from invdiff.surrogates.wdno import WDNO, generate, overwrite

pywt = pytest.importorskip("pywt")


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["haar", "bior2.4", "db2"])
def test_dwt_matches_pywavelets_periodization(name):
    u = torch.randn(2, 3, 8, 16, generator=_g(), dtype=torch.float64)
    c = DWT2(name)(u).reshape(2, 3, 4, 4, 8)
    cA, (cH, cV, cD) = pywt.dwt2(u.numpy(), name, mode="periodization", axes=(-2, -1))
    # pywt: cH = detail along axis -2 (time) = our HL, cV = detail along axis -1 (space) = our LH
    for band, ref in zip(range(4), (cA, cV, cH, cD)):
        np.testing.assert_allclose(c[:, :, band].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("name", ["haar", "bior2.4"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_dwt_perfect_reconstruction(name, dtype, tol):
    u = torch.randn(3, 2, 16, 32, generator=_g(1), dtype=dtype)
    d = DWT2(name)
    c = d(u)
    assert c.shape == (3, 8, 8, 16) and c.dtype == dtype
    assert (d.inverse(c) - u).abs().max() < tol * u.abs().max()
    d3 = DWT2(name, levels=3)
    parts = d3.decompose(u)
    assert [tuple(p.shape) for p in parts] == [(3, 2, 2, 4), (3, 6, 2, 4), (3, 6, 4, 8), (3, 6, 8, 16)]
    assert (d3.reconstruct(parts) - u).abs().max() < tol * u.abs().max()
    if dtype == torch.float64 and name == "haar":  # the approximation of the deepest level equals pywt's multilevel one
        ref = pywt.wavedec2(u.numpy(), name, mode="periodization", level=3, axes=(-2, -1))[0]
        np.testing.assert_allclose(parts[0].numpy(), ref, atol=1e-10)


def test_haar_is_orthogonal_and_preserves_energy():
    W = analysis_matrix("haar", 16)
    assert torch.allclose(W @ W.T, torch.eye(16, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(synthesis_matrix("haar", 16), W.T, atol=1e-14)
    u = torch.randn(4, 1, 8, 16, generator=_g(2), dtype=torch.float64)
    c = DWT2("haar")(u)
    assert math.isclose(float((c**2).sum()), float((u**2).sum()), rel_tol=1e-12)


def test_bior_synthesis_is_the_inverse():
    for n in (8, 32):
        W, S = analysis_matrix("bior2.4", n), synthesis_matrix("bior2.4", n)
        assert torch.allclose(S @ W, torch.eye(n, dtype=torch.float64), atol=1e-12)


def test_dwt_is_differentiable():
    u = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: DWT2("bior2.4")(v), (u,))


def test_band_scaler_standardises_and_inverts():
    c = torch.randn(500, 3, 4, 4, generator=_g(3), dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.01]).view(1, 3, 1, 1) + 2.0
    sc = BandScaler(3).to(torch.float64).fit(c)
    z = sc(c)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(sc.inverse(z), c, atol=1e-12)


def test_overwrite_keeps_known_channels_exactly():
    x, known = torch.randn(2, 4, 3, 3, generator=_g(4)), torch.randn(2, 4, 3, 3, generator=_g(5))
    m = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 4, 1, 1)
    out = overwrite(x, known, m.expand_as(x))
    assert torch.equal(out[:, [0, 2]], known[:, [0, 2]]) and torch.equal(out[:, [1, 3]], x[:, [1, 3]])


def _tiny(domain="wavelet"):
    torch.manual_seed(0)
    m = WDNO(nt=8, nx=16, domain=domain, channels=(8, 16), emb_dim=16)
    u = torch.randn(20, 8, 16, generator=_g(6))
    f = torch.randn(20, 8, 16, generator=_g(7))
    return m.fit_scaling(u, u[:, 0], f), u, f


@pytest.mark.parametrize("domain", ["wavelet", "physical"])
def test_wdno_condition_channels_and_masks(domain):
    m, u, f = _tiny(domain)
    k, mask = m.condition(3, u0=None, f=f[:3])
    full = m.codec_c.encode(torch.stack([torch.zeros(3, 8, 16), f[:3]], 1))
    per = k.shape[1] // 2
    assert torch.equal(k[:, :per], torch.zeros_like(k[:, :per]))  # u0 missing: masked out
    assert torch.equal(k[:, per:], full[:, per:])  # f known: exactly its encoding
    assert torch.equal(mask[:, 0], torch.zeros_like(mask[:, 0])) and torch.equal(mask[:, 1], torch.ones_like(mask[:, 1]))
    assert torch.allclose(m.decode(m.encode(u[:3])), u[:3], atol=1e-5)


def test_wdno_predict_shapes_dtypes_and_initial_frame():
    m, u, f = _tiny()
    out = m.predict(u[:2, 0], f[:2], steps=3, generator=_g(8))
    assert out.shape == (2, 8, 16) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], u[:2, 0])
    out64 = m.double().predict(u[:2, 0].double(), None, steps=3, n_samples=2, generator=_g(8))
    assert out64.shape == (2, 2, 8, 16) and out64.dtype == torch.float64


class _ConditionalGaussian:
    """Exact denoiser of N(mean, s^2 I) with the mean given as the condition."""

    def __init__(self, s):
        self.s = s

    def __call__(self, x, sigma, mean):
        s2 = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return mean + self.s**2 / (self.s**2 + s2) * (x - mean)


def test_generate_passes_the_condition_exact_gaussian():
    # probability-flow ODE from x_T ~ N(0, smax^2): x_0 = mean + k (x_T - mean), k = s / sqrt(s^2 + smax^2)
    s, smax, n = 0.5, 20.0, 4000
    mean = torch.tensor([1.0, -2.0, 0.5]).repeat(n, 1)
    x = generate(_ConditionalGaussian(s), (n, 3), dict(mean=mean), steps=40, sigma_max=smax, sigma_min=1e-3,
                 generator=_g(9), dtype=torch.float64)
    k = s / math.sqrt(s**2 + smax**2)
    exp_mean, exp_std = (1 - k) * mean[0].double(), k * smax
    # z-bound 5 on the mean (std exp_std / sqrt(n)) plus 1% for the solver; std within 5%
    assert ((x.mean(0) - exp_mean).abs() < 5 * exp_std / math.sqrt(n) + 0.01).all()
    assert ((x.std(0) / exp_std - 1).abs() < 0.05).all()


def test_fno_and_persistence_shapes():
    net = FNO2d(modes=(4, 4), width=8, layers=2, pad=2)
    u0, f = torch.randn(3, 16), torch.randn(3, 8, 16)
    out = net(u0, f)
    assert out.shape == (3, 8, 16) and torch.equal(out[:, 0], u0)
    p = persistence(u0, 8)
    assert p.shape == (3, 8, 16) and torch.equal(p[:, 5], u0)


def test_save_load_round_trip(tmp_path):
    m, u, f = _tiny()
    card = {"model": "wdno", "network": m.config}
    path = save_model(m, card, tmp_path / "m.safetensors", half=False)
    m2 = load_model(path)
    x = torch.randn(2, *m.x_shape, generator=_g(10))
    with torch.no_grad():
        assert torch.equal(m(x, 0.5, u0=u[:2, 0], f=f[:2]), m2(x, 0.5, u0=u[:2, 0], f=f[:2]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="divisible"):
        DWT2("haar")(torch.zeros(1, 1, 7, 8))
    with pytest.raises(ValueError, match="even"):
        analysis_matrix("haar", 7)
    with pytest.raises(ValueError, match="unknown discrete wavelet"):
        DWT2("nope")
    with pytest.raises(ValueError, match="divisible"):
        DWT2("haar", levels=2).decompose(torch.zeros(1, 1, 6, 8))
    with pytest.raises(ValueError, match="B, C, T, N"):
        DWT2("haar")(torch.zeros(8, 8))
    m, u, f = _tiny()
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.zeros(1, 1, 4, 8), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        m(torch.zeros(1, *m.x_shape), 0.0)
    with pytest.raises(ValueError, match="u0"):
        m.predict(torch.zeros(2, 15), f[:2])
    with pytest.raises(ValueError, match="batch"):
        m(torch.zeros(2, *m.x_shape), 1.0, f=f[:3])
    with pytest.raises(ValueError, match="domain"):
        WDNO(domain="fourier")
    with pytest.raises(ValueError, match="forcing"):
        FNO2d(modes=(2, 2), width=4, layers=1)(torch.zeros(1, 8), None)


def test_benchmark_error_metrics_exact():
    from invdiff.benchmarks.surrogates import _errors

    u = torch.randn(5, 8, 16, generator=_g(11), dtype=torch.float64)
    e = _errors(1.1 * u, u)
    assert math.isclose(e["rel_l2"], 0.1, rel_tol=1e-9)
    assert math.isclose(e["mse"], 0.01 * float((u[:, 1:] ** 2).mean()), rel_tol=1e-9)
    assert e["rel_l2_sem"] < 1e-9  # every trajectory has exactly 0.1


def test_sensors_on_the_prior_state_match_sensors_on_the_trajectory():
    from invdiff.benchmarks.pde_inverse import BoundPrior, StatePhysics
    from invdiff.operators.pde import PointSensors

    m, u, f = _tiny()
    H = PointSensors((16,), torch.tensor([[0.1], [0.5]]), length=15 / 16, periodic=False, time_axis=True, n_frames=8)
    phys = StatePhysics(m, H, 0.1)
    x = m.encode(u[:3])
    assert torch.allclose(phys.A(x), H.A(u[:3, None]), atol=1e-5)
    prior = BoundPrior(m, f[:3])
    with torch.no_grad():  # sample-major tiling: rows k*B + b use f[b]
        out = prior(torch.cat([x, x]), 1.0)
        assert torch.allclose(out[3:], m(x, 1.0, f=f[:3]), atol=1e-6)


# -- the super-resolution stage (invdiff.surrogates.wdno_sr) ----------------------------------


def test_interpolate_is_exact_on_bilinear_fields_and_nests():
    from invdiff.surrogates.wdno_sr import coarsen, interpolate

    def field(t, x):
        return 0.3 + 2.0 * t - 1.5 * x + 0.7 * t * x

    tc, xc = torch.meshgrid(torch.arange(4.0, dtype=torch.float64), torch.arange(6.0, dtype=torch.float64), indexing="ij")
    tf, xf = torch.meshgrid(torch.arange(8.0, dtype=torch.float64) / 2, torch.arange(12.0, dtype=torch.float64) / 2, indexing="ij")
    fine = interpolate(field(tc, xc)[None])
    torch.testing.assert_close(fine[0], field(tf, xf), rtol=0, atol=1e-12)
    u = torch.randn(2, 4, 6, generator=_g(11))
    assert torch.equal(coarsen(interpolate(u)), u)


def test_superres_stage_shapes_round_trip_and_bad_input(tmp_path):
    from invdiff.surrogates.train import build_model, train
    from invdiff.surrogates.wdno_sr import WaveletSR, coarsen

    sr = WaveletSR(nt=4, nx=8, channels=(8, 16))
    u = torch.randn(6, 8, 16, generator=_g(12))
    f = torch.randn(6, 8, 16, generator=_g(13))
    sr.fit_scaling(u, f)
    torch.testing.assert_close(sr.decode(sr.encode(u), coarsen(u)), u, rtol=0, atol=1e-5)  # bands <-> fine trajectory
    with pytest.raises(ValueError, match="coarse="):
        sr.decode(sr.encode(u))  # a residual model needs the coarse trajectory it refines
    plain = WaveletSR(nt=4, nx=8, channels=(8, 16), residual=False).fit_scaling(u, f)
    torch.testing.assert_close(plain.decode(plain.encode(u)), u, rtol=0, atol=1e-5)
    x = torch.randn(2, *sr.x_shape, generator=_g(14))
    known = sr.condition(2, coarsen(u[:2]), coarsen(f[:2]))
    with torch.no_grad():
        assert torch.equal(sr(x, 0.7, coarse=coarsen(u[:2]), f=coarsen(f[:2])), sr(x, 0.7, known=known))
    with pytest.raises(ValueError, match="expected"):
        sr.condition(2, u[:2], coarsen(f[:2]))  # a fine trajectory where the coarse one is expected
    with pytest.raises(ValueError, match="coarse="):
        sr(x, 0.7)
    model = build_model({"model": "wdno-sr", "network": sr.config})
    ema, stats = train(model, dict(u=u, u0=u[:, 0], f=f), steps=2, batch=3, log=lambda s: None)
    assert stats["steps"] == 2 and math.isfinite(stats["final_loss"])
    path = save_model(ema, {"model": "wdno-sr", "network": sr.config}, tmp_path / "sr.safetensors", half=False)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x, 0.7, known=known), ema(x, 0.7, known=known))


def test_residual_superres_with_zero_residual_is_the_interpolation():
    """A residual SR model whose bands decode to zero returns exactly the linear interpolation (its floor)."""
    from invdiff.surrogates.wdno_sr import WaveletSR, coarsen, interpolate

    sr = WaveletSR(nt=4, nx=8, channels=(8, 16))
    u = torch.randn(5, 8, 16, generator=_g(15), dtype=torch.float64)
    sr.fit_scaling(u, torch.randn(5, 8, 16, generator=_g(16), dtype=torch.float64))
    zero = sr.codec_u.encode(torch.zeros(2, 1, 8, 16, dtype=torch.float64))
    torch.testing.assert_close(sr.decode(zero, coarsen(u[:2])), interpolate(coarsen(u[:2])), rtol=0, atol=1e-10)
    # a linear-in-(t, x) trajectory has zero residual: its encoding is the encoding of zero
    t, x = torch.meshgrid(torch.arange(8.0, dtype=torch.float64), torch.arange(16.0, dtype=torch.float64), indexing="ij")
    lin = (0.2 * t - 0.1 * x + 0.01 * t * x)[None]
    torch.testing.assert_close(sr.encode(lin), zero[:1], rtol=0, atol=1e-10)


@pytest.mark.slow
def test_shipped_superres_stage_beats_linear_interpolation_on_held_out_trajectories():
    """The shipped residual SR stage (``burgers-wdno-sr-64x128``), from the exact nested coarse trajectory
    of held-out fine solves, has a lower error on t > 0 than linear interpolation (its baseline and floor)."""
    from invdiff.surrogates import load_surrogate
    from invdiff.surrogates.data import burgers_trajectories
    from invdiff.surrogates.wdno_sr import coarsen, interpolate

    sr = load_surrogate("burgers-wdno-sr-64x128")
    assert sr.card["network"]["residual"] and sr.card["command"].startswith("OMP_NUM_THREADS=1 python -m invdiff.surrogates.train")
    data = burgers_trajectories(8, seed=1, nx=128, nt=64)
    u, f = data["u"], data["f"]
    fine = sr.predict(coarsen(u), coarsen(f), steps=30, generator=_g(17))
    err_sr = float(((fine - u)[:, 1:] ** 2).mean())
    err_lin = float(((interpolate(coarsen(u)) - u)[:, 1:] ** 2).mean())
    assert err_sr < 0.9 * err_lin, (err_sr, err_lin)
