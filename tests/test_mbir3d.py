"""3D inverse problems with 2D priors (issue 13): D_z and its adjoint, the ADMM TV solver against a
Chambolle-Pock reference, slice chunking, per-slice MRI masks, 3D phantoms, sampler API shapes."""
from __future__ import annotations

import pytest
import torch

from invdiff import samplers
from invdiff.datasets import phantoms3d
from invdiff.datasets.phantoms import make_generator
from invdiff.diffusion.slicewise import SliceWisePrior
from invdiff.operators import CT, SingleCoilMRI, Volume
from invdiff.operators.finite_difference import FiniteDifference
from invdiff.operators.volume3d import SliceMaskMRI, slice_masks
from invdiff.samplers.admm_tv import TVADMM, soft_threshold, tv_objective, tv_reconstruct
from invdiff.samplers.dds import DDS
from invdiff.samplers.diffusion_mbir import DiffusionMBIR

torch.set_num_threads(1)


def dense(f, in_shape):
    n = int(torch.tensor(in_shape).prod())
    E = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return f(E).reshape(n, -1).T


# ----------------------------------------------------------------------------------------------
# D_z and all-axes differences
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axes", [(2,), (3,), (4,), (2, 3, 4)])
def test_difference_adjoint_is_the_exact_transpose(axes):
    xs = (2, 3, 4, 5)
    D = FiniteDifference(axes, x_shape=xs)
    M = dense(D.A, xs)
    Mt = dense(D.A_adjoint, (len(axes), *xs))
    assert torch.equal(Mt, M.T)  # integer-valued entries: exact
    # each row of D_k is e_{i+1} - e_i, or zero at the last index of axis k
    assert set(M.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(M.abs().sum(1), torch.where(M.abs().sum(1) > 0, 2.0, 0.0).to(M.dtype))


def test_dz_values_on_a_ramp_and_constants():
    z = torch.arange(5.0).reshape(1, 1, 5, 1, 1).expand(2, 1, 5, 3, 3)
    d = FiniteDifference((2,)).A(z)
    assert d.shape == (2, 1, 1, 5, 3, 3)
    assert torch.equal(d[:, 0, :, :4], torch.ones(2, 1, 4, 3, 3)) and torch.equal(d[:, 0, :, 4], torch.zeros(2, 1, 3, 3))
    assert FiniteDifference((2, 3, 4)).A(torch.full((1, 2, 3, 4, 5), 7.0)).abs().max() == 0
    with pytest.raises(ValueError, match="expected"):
        FiniteDifference((1,))


def test_soft_threshold_is_the_prox_of_the_l1_norm():
    v = torch.linspace(-2, 2, 41, dtype=torch.float64)
    t = 0.7
    # brute-force argmin_w 0.5 (w - v)^2 + t |w| on a fine grid
    w = torch.linspace(-3, 3, 60001, dtype=torch.float64)
    ref = w[(0.5 * (w[None] - v[:, None]) ** 2 + t * w.abs()[None]).argmin(1)]
    assert torch.allclose(soft_threshold(v, t), ref, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# ADMM against a long Chambolle-Pock run (a different solver) on a small well-posed problem
# ----------------------------------------------------------------------------------------------
def chambolle_pock(A: torch.Tensor, Dm: torch.Tensor, y: torch.Tensor, lam: float, iters: int) -> torch.Tensor:
    """min_x 0.5 ||A x - y||^2 + lam ||Dm x||_1 with K = [A; Dm] (Chambolle & Pock 2011, alg. 1)."""
    K = torch.cat([A, Dm])
    L = float(torch.linalg.matrix_norm(K, ord=2))
    tau = sigma = 0.99 / L
    m = A.shape[0]
    x = torch.zeros(A.shape[1], dtype=A.dtype)
    xb, p = x.clone(), torch.zeros(K.shape[0], dtype=A.dtype)
    for _ in range(iters):
        q = p + sigma * (K @ xb)
        p = torch.cat([(q[:m] - sigma * y) / (1 + sigma), q[m:].clamp(-lam, lam)])
        x_new = x - tau * (K.T @ p)
        xb, x = 2 * x_new - x, x_new
    return x


def slice_matrix_operator(depth: int = 3, side: int = 8, m: int = 96, seed: int = 0):
    """A well-conditioned linear operator on (B, 1, depth, side, side): the same Gaussian
    (m x side^2) matrix applied to every slice (singular values in about [0.2, 1.8])."""
    from deepinv.physics import LinearPhysics

    M = torch.randn(m, side * side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / m**0.5
    return LinearPhysics(A=lambda x: x.reshape(x.shape[0], 1, depth, side * side) @ M.T,
                         A_adjoint=lambda y: (y @ M).reshape(y.shape[0], 1, depth, side, side)), (1, depth, side, side)


@pytest.mark.parametrize("axes", [(2,), (2, 3, 4)])
def test_admm_converges_to_the_tv_solution(axes):
    op, xs = slice_matrix_operator()
    g = torch.Generator().manual_seed(1)
    x_true = phantoms3d.ct_phantoms3d(1, size=8, depth=3, generator=g, dtype=torch.float64)
    y = op.A(x_true) + 0.02 * torch.randn(1, 1, 3, 96, generator=g, dtype=torch.float64)
    lam = 0.05
    A = dense(op.A, xs)
    D = FiniteDifference(axes, x_shape=xs)
    assert float(torch.linalg.svdvals(A)[-1]) > 0.1  # A has full column rank: the minimiser is unique
    x_ref = chambolle_pock(A, dense(D.A, xs), y.flatten(), lam, 3000).reshape(1, *xs)
    x_admm, hist = tv_reconstruct(y, op, lam=lam, rho=1.0, axes=axes, iters=200, cg_iters=8,
                                  x0=torch.zeros(1, *xs, dtype=torch.float64))
    f_ref = float(tv_objective(x_ref, op, y, lam, D))
    f_admm = float(tv_objective(x_admm, op, y, lam, D))
    assert abs(f_admm - f_ref) < 1e-9 * f_ref, (f_admm, f_ref)
    assert (x_admm - x_ref).norm() < 1e-6 * x_ref.norm()
    assert hist[-1] <= hist[0]
    # the TV solution is not least squares (the test would fail if the TV term were ignored)
    x_ls = torch.linalg.lstsq(A, y.flatten()[:, None]).solution.reshape(1, *xs)
    assert (x_ls - x_ref).norm() > 1e-2 * x_ref.norm()


def test_admm_state_and_errors():
    op = SliceMaskMRI(torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match="linear operator"):
        TVADMM(object(), torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="lam"):
        TVADMM(op, torch.zeros(1, 2, 3, 8, 8), lam=-1.0)
    admm = TVADMM(op, torch.zeros(1, 2, 3, 8, 8), lam=0.1, rho=2.0)
    z, u = admm.init(torch.randn(1, 2, 3, 8, 8))
    assert z.shape == (1, 1, 2, 3, 8, 8) and torch.equal(u, torch.zeros_like(z))


# ----------------------------------------------------------------------------------------------
# the slice-wise prior
# ----------------------------------------------------------------------------------------------
def test_slicewise_chunking_gives_the_unchunked_result():
    from invdiff.diffusion.networks import UNet
    from invdiff.diffusion.edm import EDMPrecond

    torch.manual_seed(0)
    net = EDMPrecond(UNet(in_channels=1, channels=(8, 16), emb_dim=16), sigma_data=0.5).double().eval()
    x = torch.randn(2, 1, 5, 8, 8, dtype=torch.float64)
    sigma = torch.tensor([0.3, 2.0], dtype=torch.float64)
    with torch.no_grad():
        full = SliceWisePrior(net, chunk=1000)(x, sigma)
        for chunk in (1, 3, 7):
            part = SliceWisePrior(net, chunk=chunk)(x, sigma)
            assert torch.allclose(part, full, rtol=0, atol=1e-12), chunk
        # the reference: the network on each slice alone, with its volume's sigma
        for b in range(2):
            for d in range(5):
                ref = net(x[b : b + 1, :, d], sigma[b : b + 1])
                assert torch.allclose(full[b : b + 1, :, d], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_slicewise_axis_and_exact_chunking(axis):
    calls = []

    def prior(x, sigma):  # batch-independent: each row on its own
        calls.append(x.shape[0])
        return x * sigma.reshape(-1, 1, 1, 1) + x.mean(dim=(1, 2, 3), keepdim=True)

    x = torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    s = torch.tensor([0.5, 1.5], dtype=torch.float64)
    D = SliceWisePrior(prior, axis=axis, chunk=2)
    out = D(x, s)
    assert torch.equal(out, SliceWisePrior(prior, axis=axis, chunk=100)(x, s))
    assert max(calls[: len(calls) - 1]) <= 2 and D.slice_evals == 2 * x.shape[axis]
    for k in range(x.shape[axis]):
        sl = x.select(axis, k)
        assert torch.allclose(out.select(axis, k), sl * s.reshape(-1, 1, 1, 1) + sl.mean(dim=(1, 2, 3), keepdim=True),
                              rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="volume"):
        D(torch.zeros(2, 1, 4, 4), s)
    with pytest.raises(ValueError, match="sigma"):
        D(x, torch.ones(3))


# ----------------------------------------------------------------------------------------------
# operators and phantoms
# ----------------------------------------------------------------------------------------------
def test_slice_mask_mri_is_the_2d_operator_per_slice():
    masks = slice_masks(3, 16, acceleration=2, kind="random-1d", seed=1)
    assert not torch.equal(masks[0], masks[1])
    op = SliceMaskMRI(masks)
    x = torch.randn(2, 2, 3, 16, 16, dtype=torch.float64)
    y = op.A(x)
    for d in range(3):
        assert torch.allclose(y[:, :, d], SingleCoilMRI(masks[d]).A(x[:, :, d]), atol=1e-12)
    v = torch.randn_like(y)
    assert abs(float((y * v).sum() - (x * op.A_adjoint(v)).sum())) < 1e-10 * float(y.norm() * v.norm())


def test_phantom_slices_are_slices_of_the_volume():
    from invdiff.datasets.phantoms3d import _coords, _ct, _mri

    z = _coords(6, 6, None, torch.float64).expand(2, 6)
    for fn in (_ct, _mri):
        vol = fn(2, 12, z, torch.Generator().manual_seed(5), None, torch.float64)
        one = fn(2, 12, z[:, 4:5], torch.Generator().manual_seed(5), None, torch.float64)
        assert torch.equal(vol[:, :, 4:5], one)
    v = phantoms3d.ct_phantoms3d(2, size=16, depth=8, generator=torch.Generator().manual_seed(0))
    assert v.shape == (2, 1, 8, 16, 16) and v.min() >= 0 and v.max() <= 1 and v.std() > 0.1
    assert torch.equal(v, phantoms3d.ct_phantoms3d(2, size=16, depth=8, generator=torch.Generator().manual_seed(0)))
    m = phantoms3d.mri_phantoms3d(1, size=16, generator=torch.Generator().manual_seed(0))
    assert m.shape == (1, 2, 16, 16, 16) and float(m.pow(2).sum(1).sqrt().max()) <= 1 + 1e-6
    s = make_generator("ct-phantom3d-slices", size=16)(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 1, 16, 16)
    with pytest.raises(ValueError, match="kind"):
        phantoms3d.axial_slices("pet", 2)


# ----------------------------------------------------------------------------------------------
# samplers on volumes
# ----------------------------------------------------------------------------------------------
def gaussian_slice_prior(x, sigma):
    """Exact denoiser of N(0, I) per pixel."""
    return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("tv_axes", [(2,), (2, 3, 4)])
def test_diffusion_mbir_api_shapes(tv_axes):
    op = Volume(CT(8, angles=4), depth=4, sigma=0.01)
    x = phantoms3d.ct_phantoms3d(2, size=8, depth=4, generator=torch.Generator().manual_seed(0))
    y = op(x)
    s = samplers.make("diffusion-mbir", gaussian_slice_prior, steps=6, tv_axes=tv_axes, progress=False, chunk=3)
    out = s.sample(y, op, n_samples=3, generator=torch.Generator().manual_seed(1))
    assert out.samples.shape == (3, 2, 1, 4, 8, 8) and out.nfe == 6
    assert torch.isfinite(out.samples).all()
    assert s.denoiser.denoiser.slice_evals == 6 * 3 * 2 * 4
    again = s.sample(y, op, n_samples=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.samples, again.samples)
    with pytest.raises(ValueError, match="volumes"):
        DiffusionMBIR(gaussian_slice_prior, steps=3, progress=False).sample(torch.zeros(1, 1, 12, 4), CT(8, angles=4, sigma=0.1))
    for bad in (dict(lam=-1), dict(rho=0), dict(cg_iters=0), dict(tv_axes=(1,)), dict(eta=2)):
        with pytest.raises(ValueError):
            DiffusionMBIR(gaussian_slice_prior, **bad)


def test_dds_runs_on_volumes_with_the_slicewise_prior():
    op = SliceMaskMRI(slice_masks(4, 8, acceleration=2, seed=0), sigma=0.01)
    x = phantoms3d.mri_phantoms3d(1, size=8, depth=4, generator=torch.Generator().manual_seed(0))
    y = op(x)
    out = samplers.make("dds", SliceWisePrior(gaussian_slice_prior), steps=5, progress=False).sample(
        y, op, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (2, 1, 2, 4, 8, 8) and out.nfe == 5 and torch.isfinite(out.samples).all()


def test_mbir_with_a_strong_tv_makes_slices_agree():
    """With a huge lambda along z the corrected estimate is (nearly) constant along z; with lambda
    = 0 it is not: the hook does couple the slices."""
    op = SliceMaskMRI(slice_masks(4, 8, acceleration=2, seed=0), sigma=0.01)
    x = phantoms3d.mri_phantoms3d(1, size=8, depth=4, generator=torch.Generator().manual_seed(0))
    y = op(x)
    spread = {}
    for lam in (0.0, 100.0):
        s = DiffusionMBIR(gaussian_slice_prior, steps=8, lam=lam, rho=50.0, cg_iters=10, admm_iters=5, eta=0.0,
                          progress=False)
        out = s.sample(y, op, generator=torch.Generator().manual_seed(0)).samples[0]
        spread[lam] = float(FiniteDifference((2,)).A(out).abs().mean())
    assert spread[100.0] < 0.2 * spread[0.0], spread


def test_mbir_without_tv_is_dds_on_the_slicewise_prior():
    """lambda = 0 and rho -> 0 leave DDS's proximal CG step: the samples match DDS's."""
    op = Volume(CT(8, angles=4), depth=3, sigma=0.05)
    x = phantoms3d.ct_phantoms3d(1, size=8, depth=3, generator=torch.Generator().manual_seed(0))
    y = op(x)
    prior = SliceWisePrior(gaussian_slice_prior)
    prior.sigma_data = 0.3
    kw = dict(steps=6, cg_iters=3, eta=0.5, progress=False)
    a = DDS(prior, **kw).sample(y, op, n_samples=2, generator=torch.Generator().manual_seed(3)).samples
    for order in ("zx", "xz"):
        b = DiffusionMBIR(prior, lam=0.0, rho=1e-12, order=order, **kw).sample(
            y, op, n_samples=2, generator=torch.Generator().manual_seed(3)).samples
        assert torch.allclose(a, b, rtol=0, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())
