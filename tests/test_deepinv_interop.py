"""deepinv's algorithms on invdiff operators, the decomposable (SVD) interface, complex channels.

References: the closed-form Gaussian posterior mean (``Gaussian.posterior`` for a matrix, and
:math:`\\mu + \\frac{c}{c + \\sigma^2} A^\\top (y - A\\mu)` for single-coil MRI, where
:math:`A A^\\top` is a projection), the defining identities of an SVD, and numpy's complex
arithmetic. DDRM is not an exact posterior sampler, so its sample mean is compared loosely:
the bound is a fixed fraction of the posterior standard deviation, far above the Monte-Carlo
error (stated per test) and far below the error of a wrong decomposition (a permuted ``U``
or a missing zero padding moves the mean by about one prior standard deviation).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from deepinv.sampling import DDRM

from invdiff import operators
from invdiff.diffusion.gmm import Gaussian
from invdiff.operators import CT, Matrix
from invdiff.operators.complex import to_channels, to_channels_np, to_complex
from invdiff.operators.svd import DenseSVD, decomposable

F64 = torch.float64
SIGMAS = np.linspace(1.0, 1e-3, 100)  # deepinv's DDRM schedule without the final sigma = 0


def _ddrm(prior, y, physics, n, seed=0):
    with torch.random.fork_rng():  # DDRM draws from the global generator
        torch.manual_seed(seed)
        return DDRM(denoiser=prior, sigmas=SIGMAS)(y.expand(n, *y.shape[1:]).contiguous(), physics)


def _check_svd(op, x_shape, y_shape, dtype=F64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *x_shape, generator=g, dtype=dtype)
    y = torch.randn(3, *y_shape, generator=g, dtype=dtype)
    tol = 1e-10 if dtype == F64 else 1e-4
    assert op.mask.shape == (1, *x_shape)
    assert torch.allclose(op.U(op.mask * op.V_adjoint(x)), op.A(x), atol=tol)  # A = U diag(s) V^T
    assert torch.allclose(op.V(op.mask * op.U_adjoint(y)), op.A_adjoint(y), atol=tol)  # A^T = V diag(s) U^T
    assert torch.allclose(op.V(op.V_adjoint(x)), x, atol=tol)  # V orthogonal
    z = op.U_adjoint(op.U(op.V_adjoint(x)))  # U^T U = I on the first k coordinates
    k = int((op.mask != 0).sum())
    assert torch.allclose(z.reshape(3, -1)[:, :k], op.V_adjoint(x).reshape(3, -1)[:, :k], atol=tol)


@pytest.mark.parametrize("m,n", [(4, 8), (8, 4), (5, 5)])
def test_matrix_exposes_its_svd(m, n):
    op = operators.make("matrix", m=m, n=n, kind="gaussian", seed=2, dtype=F64)
    _check_svd(op, (n,), (m,))
    s = torch.linalg.svdvals(op.matrix)
    assert torch.allclose(op.mask[0, : min(m, n)], s) and bool((op.mask[0, min(m, n):] == 0).all())


def test_batched_matrix_has_no_single_svd():
    op = Matrix(torch.randn(3, 2, 4))
    assert not hasattr(op, "mask")
    with pytest.raises(AttributeError, match="no singular value decomposition"):
        op.mask


def test_single_coil_mri_is_decomposable_and_ct_says_why_not():
    mri = operators.make("mri-4x", size=8, acceleration=2, dtype=F64)
    _check_svd(mri, (2, 8, 8), (2, 8, 8))
    ct = CT(8, angles=3)
    assert not hasattr(ct, "mask")
    with pytest.raises(AttributeError, match="CT has no singular value decomposition.*decomposable"):
        DDRM(denoiser=Gaussian(torch.zeros(1, 8, 8), 1.0), sigmas=SIGMAS)(torch.zeros(1, *ct.y_shape), ct)
    dense = decomposable(ct, dtype=F64)
    assert isinstance(dense, DenseSVD) and decomposable(mri) is mri
    _check_svd(dense, ct.x_shape, ct.y_shape)
    x = torch.randn(2, *ct.x_shape, dtype=F64)
    assert torch.allclose(dense.A(x), ct.A(x), atol=1e-6 * float(ct.A(x).abs().max()))
    with pytest.raises(ValueError, match="max_entries"):
        decomposable(ct, max_entries=100)


def test_ddrm_on_a_matrix_matches_the_gaussian_posterior_mean():
    # 1000 draws: Monte-Carlo error of the mean <= 0.6 / sqrt(1000) = 0.02 per coordinate
    sigma_y = 0.1
    A = operators.make("matrix", m=4, n=8, seed=1, s_min=0.3, dtype=F64, sigma=sigma_y, generator=torch.Generator().manual_seed(0))
    prior = Gaussian(torch.linspace(-1, 1, 8, dtype=F64), 0.5 * torch.eye(8, dtype=F64))
    y = A(prior.sample(1, generator=torch.Generator().manual_seed(1)))
    post = prior.posterior(A, y, sigma_y)
    xs = _ddrm(prior, y, A, 1000)
    assert xs.shape == (1000, 8)
    sd = post.covariance.diagonal().sqrt()
    assert float(((xs.mean(0) - post.mean) / sd).abs().max()) < 0.2


def test_ddrm_on_single_coil_mri_matches_the_gaussian_posterior_mean():
    # prior N(0, c I): posterior mean c / (c + s^2) A^T y; 300 draws: MC error <= 0.71 / sqrt(300) = 0.04
    c, s = 0.5, 0.05
    A = operators.make("mri-4x", size=8, acceleration=2, sigma=s, generator=torch.Generator().manual_seed(0), dtype=F64)
    prior = Gaussian(torch.zeros(2, 8, 8, dtype=F64), c)
    y = A(prior.sample(1, generator=torch.Generator().manual_seed(1)))
    mean = c / (c + s**2) * A.A_adjoint(y)
    xs = _ddrm(prior, y, A, 300)
    assert xs.shape == (300, 2, 8, 8)
    assert float((xs.mean(0) - mean[0]).abs().max()) < 0.2 * c**0.5


def test_ddrm_on_small_ct_through_the_dense_svd():
    # 8 x 8 CT, 4 views: a 48 x 64 matrix; 500 draws, MC error <= 0.71 / sqrt(500) = 0.03
    sigma_y = 0.05
    ct = CT(8, angles=4, sigma=sigma_y, generator=torch.Generator().manual_seed(0))
    A = decomposable(ct, dtype=F64)
    prior = Gaussian(torch.zeros(1, 8, 8, dtype=F64), 0.5)
    y = A(prior.sample(1, generator=torch.Generator().manual_seed(1)))
    post = prior.posterior(A.matrix, y.reshape(1, -1), sigma_y)
    xs = _ddrm(prior, y, A, 500)
    assert xs.shape == (500, 1, 8, 8)
    sd = post.covariance.diagonal().sqrt().reshape(1, 8, 8)
    z = ((xs.mean(0) - post.mean.reshape(1, 8, 8)) / sd).abs()
    # measured: max 0.42, mean 0.07 (DDRM's bias where s ~ sigma_y); a permuted U gives 12.7 / 1.6
    assert float(z.max()) < 0.75 and float(z.mean()) < 0.2


def test_complex_channels_round_trip_and_match_numpy():
    z = torch.randn(3, 4, 5, dtype=torch.complex128)
    x = to_channels(z)
    assert x.shape == (3, 2, 4, 5) and torch.equal(x[:, 0], z.real) and torch.equal(x[:, 1], z.imag)
    assert torch.equal(to_complex(x), z)
    assert torch.equal(to_complex(to_channels(z, dim=-1), dim=-1), z)
    a = z.numpy()
    np.testing.assert_array_equal(to_channels_np(a, axis=1), x.numpy())
    assert to_channels_np(a.real) is not None and to_channels_np(a.real).shape == a.shape  # real: unchanged
    with pytest.raises(ValueError, match="2 channels"):
        to_complex(torch.zeros(1, 3, 4))
    with pytest.raises(TypeError):
        to_channels(torch.zeros(1, 2))


@pytest.mark.parametrize("size,channels", [(8, 1), ((7, 9), 2)])
def test_circular_blur_has_deepinvs_blurfft_decomposition(size, channels):
    op = operators.Blur2D(torch.rand(3, 3, generator=torch.Generator().manual_seed(0), dtype=F64), size=size, channels=channels, dtype=F64)
    x = rand_like_shape((2, *op.x_shape), 1)
    y = rand_like_shape((2, *op.y_shape), 2)
    assert torch.allclose(op.U(op.mask * op.V_adjoint(x)), op.A(x), atol=1e-12)
    assert torch.allclose(op.V(op.mask * op.U_adjoint(y)), op.A_adjoint(y), atol=1e-12)
    assert torch.allclose(op.V(op.V_adjoint(x)), x, atol=1e-12)
    assert op.mask.dtype == F64 and operators.Blur2D(torch.ones(3, 3), size=8).mask.dtype == torch.float32
    reflect = operators.Blur2D(torch.ones(3, 3), size=8, padding="reflect")
    assert not hasattr(reflect, "mask")
    with pytest.raises(AttributeError, match="no singular value decomposition"):
        reflect.mask


def test_ddrm_on_circular_blur_is_ddrm_on_deepinvs_blurfft():
    # the same decomposition as deepinv's BlurFFT, so DDRM's draws are the same, bit for bit
    # (DDRM is biased here: its mean is 0.48 from the Wiener posterior mean at most; rfft
    # coordinates are not orthonormal, a deepinv limitation)
    import deepinv as dinv

    op = operators.make("blur-gaussian", size=8, blur_sigma=1.0, kernel_size=5, sigma=0.05, dtype=F64)
    ref = dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=op.filter.to(F64), noise_model=dinv.physics.GaussianNoise(0.05))
    prior = Gaussian(torch.zeros(1, 8, 8, dtype=F64), 0.5)
    y = op.A(prior.sample(1, generator=torch.Generator().manual_seed(1)))
    a, b = _ddrm(prior, y, op, 20), _ddrm(prior, y, ref, 20)
    assert a.shape == (20, 1, 8, 8) and torch.allclose(a, b, atol=1e-10)


def rand_like_shape(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
