"""Invariants of every registered operator (one parametrised test), and independent references.

Exact references: the dense matrix of ``A`` (built column by column in float64) against the
dense matrix of ``A_adjoint`` (its transpose) and against ``torch.linalg.svdvals`` for the
norm; skimage's ``radon``, numpy's ``fft2`` and scipy's ``ndimage.convolve`` for the physics.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
from deepinv.physics import LinearPhysics

from invdiff import operators
from invdiff.operators import CT, Blur2D, Matrix, MultiCoilMRI, SingleCoilMRI, Volume

# small, fast configurations of each registered operator (defaults are 64x64 images); volume-mri
# along axis 3 so that test_volume_is_slice_wise exercises the chunking
from tests.operator_configs import SMALL as _SMALL, small as _small  # noqa: E402

SMALL = {**_SMALL, "volume-mri": dict(size=8, depth=3, axis=3)}
NAMES = sorted(n for n in operators.available() if not n.startswith("pde-"))
PDE_NAMES = sorted(n for n in operators.available() if n.startswith("pde-"))


def small(name: str, **kw):
    """The operator ``name`` at a small size (see ``tests/operator_configs.py``)."""
    return _small(name, **{**SMALL.get(name, {}), **kw})


def rand(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dense(f, in_shape):
    """The matrix of the linear map ``f`` on ``(B, *in_shape)``, column by column (float64)."""
    n = int(np.prod(in_shape))
    E = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return f(E).reshape(n, -1).T


def smooth_image(shape, seed=0):
    """A non-negative smooth test signal (sum of Gaussian bumps) of shape (1, *shape)."""
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return torch.rand(1, *shape, generator=g, dtype=torch.float64)
    *lead, H, W = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64), torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    img = torch.zeros(H, W, dtype=torch.float64)
    for _ in range(4):
        c = torch.rand(2, generator=g, dtype=torch.float64) - 0.5
        img += torch.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / 0.1)
    return img.expand(1, *lead, H, W).clone()


# boundary / geometry variants that the registry defaults do not cover
VARIANTS = [
    ("blur-gaussian", dict(padding="reflect")),
    ("blur-motion", dict(padding="valid")),
    ("blur-uniform", dict(padding="reflect", channels=2)),
    ("ct-sparse-view", dict(circle=True)),
    ("ct-fan", dict(size=11, n_detectors=9)),
    ("matrix", dict(kind="gaussian", m=9, n=4)),
    ("mri-4x", dict(size=9, mask="gaussian-2d")),
    ("mri-multicoil-8x", dict(size=9, coils=3, acceleration=2, mask="random-1d")),
    ("volume-ct", dict(axis=4)),
]
CASES = [pytest.param(n, {}, id=n) for n in NAMES] + [
    pytest.param(n, kw, id=n + "-" + "-".join(f"{k}={v}" for k, v in kw.items())) for n, kw in VARIANTS
]


@pytest.mark.parametrize("name,kw", CASES)
def test_invariants(name, kw):
    op = small(name, **kw)
    assert isinstance(op, LinearPhysics)
    xs, ys = tuple(op.x_shape), tuple(op.y_shape)

    # exact adjoint in float32: |<Au, v> - <u, A^T v>| / (|Au| |v|) < 1e-5
    u, v = rand((3, *xs), 1, torch.float32), rand((3, *ys), 2, torch.float32)
    Au = op.A(u)
    assert Au.shape == (3, *ys) and Au.dtype == torch.float32
    err = ((Au * v).sum() - (u * op.A_adjoint(v)).sum()).abs() / (Au.norm() * v.norm())
    assert err < 1e-5, f"{name}: adjoint mismatch {err:.2e}"

    # float64: the dense matrix of A^T is the transpose of the dense matrix of A
    M = dense(op.A, xs)
    Mt = dense(op.A_adjoint, ys)
    assert torch.allclose(Mt, M.T, atol=1e-12 * M.abs().max()), f"{name}: A^T is not the transpose of A"

    # compute_sqnorm (deepinv's power method) against the exact largest singular value; its
    # random start comes from the global generator (deepinv 0.5 ignores its rng argument), so
    # seed it here: the result must not depend on the tests run before
    s_max = torch.linalg.svdvals(M)[0]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        est = op.compute_sqnorm(torch.zeros(1, *xs, dtype=torch.float64), max_iter=300, tol=1e-6, verbose=False) ** 0.5
    assert abs(float(est) - float(s_max)) < 1e-3 * float(s_max), f"{name}: compute_sqnorm {float(est)} vs svd {float(s_max)}"

    # linearity and batch consistency (float64)
    x = rand((3, *xs), 3)
    w = rand((3, *xs), 4)
    assert torch.allclose(op.A(2.0 * x - 0.5 * w), 2.0 * op.A(x) - 0.5 * op.A(w), atol=1e-12 * float(s_max) * 10)
    Ax = op.A(x)
    stacked = torch.cat([op.A(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(Ax, stacked, atol=1e-12)
    assert Ax.dtype == torch.float64 and op.A_adjoint(Ax).dtype == torch.float64

    # gradients flow to x, and agree with finite differences (float64)
    xg = rand((1, *xs), 5).requires_grad_(True)
    (op.A(xg) ** 2).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(op.A, (rand((1, *xs), 6).requires_grad_(True),), fast_mode=True)
    assert torch.autograd.gradcheck(op.A_adjoint, (rand((1, *ys), 7).requires_grad_(True),), fast_mode=True)

    # torch.func: the gradient of the data fit 0.5 ||A x - y||^2 is A^T (A x - y)
    yy = op.A(rand((1, *xs), 8))
    g = torch.func.grad(lambda z: 0.5 * ((op.A(z) - yy) ** 2).sum())(x[:1])
    assert torch.allclose(g, op.A_adjoint(op.A(x[:1]) - yy), atol=1e-10 * max(1.0, float(s_max) ** 2))

    # the baseline reconstruction reduces the data residual of x = 0
    x0 = smooth_image(xs)
    y = op.A(x0)
    xb = op.baseline(y)
    assert xb.shape == x0.shape
    res = (op.A(xb) - y).norm() / y.norm()
    assert res < 0.5, f"{name}: baseline residual {float(res):.3f} of ||y||"


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected_before_work(name):
    op = small(name)
    xs, ys = tuple(op.x_shape), tuple(op.y_shape)
    bad = (2, *xs[:-1], xs[-1] + 1)
    with pytest.raises(ValueError) as e:
        op.A(torch.zeros(bad))
    msg = str(e.value)
    assert "expected" in msg and str(bad) in msg
    with pytest.raises(ValueError):
        op.A(torch.zeros(xs))  # no batch axis
    with pytest.raises(ValueError):
        op.A_adjoint(torch.zeros(2, *ys[:-1], ys[-1] + 1))
    with pytest.raises(TypeError):
        op.A(torch.zeros(2, *xs, dtype=torch.int64))
    with pytest.raises(TypeError):
        op.A_adjoint(torch.zeros(2, *ys, dtype=torch.int64))


@pytest.mark.parametrize("name", NAMES)
def test_default_operator_has_x_shape_and_runs(name):
    op = operators.make(name)
    y = op(torch.zeros(1, *op.x_shape))
    assert y.shape == (1, *op.y_shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", PDE_NAMES)
def test_pde_operators_have_x_shape(name):
    op = small(name)
    assert hasattr(op, "x_shape")


def test_noise_is_seeded_and_has_the_right_level():
    op = operators.make("blur-gaussian", size=32, sigma=0.1, generator=torch.Generator().manual_seed(0))
    x = smooth_image((1, 32, 32)).float()
    r = op(x) - op.A(x)
    # 1024 samples: the std estimate has relative sd 1/sqrt(2*1024) = 2.2%; allow 5 sd
    assert abs(float(r.std()) - 0.1) < 5 * 0.1 / (2 * r.numel()) ** 0.5
    same = [operators.make("blur-gaussian", size=32, sigma=0.1, generator=torch.Generator().manual_seed(7))(x) for _ in range(2)]
    assert torch.equal(same[0], same[1])  # same seed, same draw
    a = operators.make("mri-4x", size=16, sigma=0.1, generator=torch.Generator().manual_seed(3))
    b = operators.make("mri-4x", size=16, sigma=0.1, generator=torch.Generator().manual_seed(3))
    xm = rand((1, 2, 16, 16), 0, torch.float32)
    assert torch.equal(a(xm), b(xm))
    # deepinv's MRI noise lives on the sampled k-space only
    assert bool((a(xm)[:, :, a.mask[0, 0] == 0] == 0).all())


# ---------------------------------------------------------------- independent references


def test_ct_matches_skimage_radon():
    from skimage.data import shepp_logan_phantom
    from skimage.transform import radon, resize

    N = 64  # padded grid 91 (odd): skimage and deepinv rotate about the same centre
    img = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)
    theta = np.linspace(0.0, 180.0, 18, endpoint=False)
    op = CT(N, angles=torch.tensor(theta), normalize=False)
    ours = op.A(torch.tensor(img)[None, None])[0, 0].numpy()
    ref = radon(img, theta=theta, circle=False)
    assert ours.shape == ref.shape
    corr = np.corrcoef(ours.ravel(), ref.ravel())[0, 1]
    assert corr > 0.99
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_ct_fan_beam_tends_to_parallel_beam():
    x = smooth_image((1, 32, 32))
    ang = torch.tensor([0.0, 40.0, 100.0, 170.0])
    par = CT(32, angles=ang, normalize=False).A(x)
    fan = CT(32, angles=ang, fan_beam=True, source_distance=1e5, detector_distance=32, normalize=False).A(x)
    assert ((fan - par).norm() / par.norm()) < 1e-3


def test_ct_fbp_reconstructs_a_smooth_phantom():
    x = smooth_image((1, 64, 64))
    op = CT(64, angles=180)
    assert (op.fbp(op.A(x)) - x).norm() / x.norm() < 0.05
    # fan beam (approximate FBP weights) and sparse view: still close
    for name, tol in [("ct-fan", 0.15), ("ct-sparse-view", 0.05)]:
        op = operators.make(name, size=64)
        assert (op.fbp(op.A(x)) - x).norm() / x.norm() < tol, name
    # limited angle: the rescaled FBP (baseline) fits the data better than the plain FBP
    la = operators.make("ct-limited-angle", size=64)
    y = la.A(x)
    assert (la.A(la.baseline(y)) - y).norm() < (la.A(la.fbp(y)) - y).norm()


def test_single_coil_mri_is_masked_orthonormal_fft():
    for H, W in [(16, 12), (9, 14)]:  # even (folded shifts) and odd (explicit shifts)
        mask = operators.cartesian_mask((H, W), 2, kind="random-1d", generator=torch.Generator().manual_seed(1))
        op = SingleCoilMRI(mask)
        x = rand((1, 2, H, W), 0)
        z = x[0, 0].numpy() + 1j * x[0, 1].numpy()
        ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z), norm="ortho")) * mask.numpy()
        y = op.A(x)
        np.testing.assert_allclose(y[0, 0].numpy() + 1j * y[0, 1].numpy(), ref, atol=1e-12)


def test_multicoil_mri_matches_per_coil_numpy_and_is_isometric_when_full():
    S = operators.birdcage_maps(4, (12, 12), dtype=torch.complex128)
    np.testing.assert_allclose((S.abs() ** 2).sum(0).numpy(), 1.0, atol=1e-12)
    mask = operators.cartesian_mask((12, 12), 3, kind="gaussian-2d", generator=torch.Generator().manual_seed(0))
    op = MultiCoilMRI(mask, coil_maps=S)
    x = rand((1, 2, 12, 12), 1)
    z = x[0, 0].numpy() + 1j * x[0, 1].numpy()
    y = op.A(x)
    for c in range(4):
        ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(S[c].numpy() * z), norm="ortho")) * mask.numpy()
        np.testing.assert_allclose(y[0, 0, c].numpy() + 1j * y[0, 1, c].numpy(), ref, atol=1e-12)
    full = MultiCoilMRI(torch.ones(12, 12), coil_maps=S)
    assert torch.allclose(full.A_adjoint(full.A(x)), x, atol=1e-12)


@pytest.mark.parametrize("padding,mode", [("circular", "wrap"), ("reflect", "mirror")])
def test_blur_matches_scipy(padding, mode):
    from scipy import ndimage

    k = operators.blur.motion_kernel(7, generator=torch.Generator().manual_seed(2)).double()
    op = Blur2D(k, size=(20, 17), padding=padding)
    x = rand((1, 1, 20, 17), 3)
    ref = ndimage.convolve(x[0, 0].numpy(), k.numpy(), mode=mode)
    np.testing.assert_allclose(op.A(x)[0, 0].numpy(), ref, atol=1e-12)


def test_blur_valid_is_the_interior_of_the_linear_convolution():
    from scipy import signal

    k = rand((5, 3), 4)
    op = Blur2D(k, size=(11, 9), padding="valid")
    x = rand((1, 1, 11, 9), 5)
    ref = signal.convolve2d(x[0, 0].numpy(), k.numpy(), mode="valid")
    np.testing.assert_allclose(op.A(x)[0, 0].numpy(), ref, atol=1e-12)


def test_wiener_is_tikhonov_least_squares():
    op = operators.make("blur-gaussian", size=8, blur_sigma=1.0, kernel_size=5)
    y = rand((1, 1, 8, 8), 0)
    M = dense(op.A, op.x_shape)
    lam = 0.05
    ref = torch.linalg.solve(M.T @ M + lam * torch.eye(64, dtype=torch.float64), M.T @ y.reshape(-1))
    np.testing.assert_allclose(op.wiener(y, lam=lam).reshape(-1).numpy(), ref.numpy(), atol=1e-10)
    opr = operators.make("blur-gaussian", size=8, blur_sigma=1.0, kernel_size=5, padding="reflect")
    Mr = dense(opr.A, opr.x_shape)
    ref = torch.linalg.solve(Mr.T @ Mr + lam * torch.eye(64, dtype=torch.float64), Mr.T @ y.reshape(-1))
    np.testing.assert_allclose(opr.wiener(y, lam=lam, max_iter=200, tol=1e-12).reshape(-1).numpy(), ref.numpy(), atol=1e-9)


def test_matrix_pinv_svd_and_batched():
    op = operators.make("matrix", m=4, n=6, kind="svd", seed=3, s_min=0.2)
    U, s, Vh = op.svd(torch.float64)
    assert torch.allclose(s, op.s.double(), atol=1e-6) and bool((s[:-1] >= s[1:]).all())
    y = rand((2, 4), 0)
    ref = torch.linalg.lstsq(op.matrix.double(), y.T).solution.T  # full row rank: min-norm = lstsq
    assert torch.allclose(op.baseline(y), ref, atol=1e-10)
    Ab = rand((3, 4, 6), 1)
    opb = Matrix(Ab)
    x = rand((3, 6), 2)
    assert torch.allclose(opb.A(x), torch.einsum("bmn,bn->bm", Ab, x))
    with pytest.raises(ValueError, match="batch"):
        opb.A(rand((2, 6), 3))


def test_volume_is_slice_wise_along_each_axis():
    op2 = SingleCoilMRI(torch.ones(6, 6))
    for axis in (2, 3, 4):
        vol = Volume(op2, depth=5, axis=axis, chunk=2)
        x = rand((2, *vol.x_shape), axis)
        y = vol.A(x)
        for d in range(5):
            assert torch.allclose(y[:, d], op2.A(x.select(axis, d)), atol=1e-12)


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="acceleration"):
        operators.make("mri-4x", acceleration=0.5)
    with pytest.raises(ValueError, match="empty"):
        SingleCoilMRI(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="acceleration"):
        operators.cartesian_mask((8, 8), 9)
    with pytest.raises(ValueError, match="angles"):
        operators.make("ct-sparse-view", views=0)
    with pytest.raises(ValueError, match="angles"):
        CT(16, angles=[])
    with pytest.raises(ValueError, match="padding"):
        operators.make("blur-uniform", padding="zeros")
    with pytest.raises(ValueError, match="larger than the image"):
        Blur2D(torch.ones(5, 5), size=4)
    with pytest.raises(ValueError, match="kind"):
        operators.make("matrix", kind="hilbert")
    with pytest.raises(ValueError, match="unknown operator"):
        operators.make("no-such-operator")


# ---------------------------------------------------------------- property-based (hypothesis)

from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _adjoint_error(op, seed=0, batch=2):
    u = rand((batch, *op.x_shape), seed, torch.float32)
    v = rand((batch, *op.y_shape), seed + 1, torch.float32)
    Au = op.A(u)
    return float(((Au * v).sum() - (u * op.A_adjoint(v)).sum()).abs() / (Au.norm() * v.norm()))


@settings(max_examples=12, deadline=None)
@given(
    H=st.integers(4, 24), W=st.integers(4, 24), kh=st.integers(1, 5), kw=st.integers(1, 5),
    padding=st.sampled_from(["circular", "reflect", "valid"]), seed=st.integers(0, 1000),
)
def test_blur_properties(H, W, kh, kw, padding, seed):
    from scipy import ndimage

    assume(kh <= H and kw <= W)
    k = rand((kh, kw), seed)
    op = Blur2D(k, size=(H, W), padding=padding)
    assert _adjoint_error(op, seed) < 1e-5
    if padding == "circular" and kh % 2 and kw % 2:
        x = rand((1, 1, H, W), seed + 2)
        ref = ndimage.convolve(x[0, 0].numpy(), k.numpy(), mode="wrap")
        np.testing.assert_allclose(op.A(x)[0, 0].numpy(), ref, atol=1e-10)


@settings(max_examples=10, deadline=None)
@given(H=st.integers(4, 20), W=st.integers(4, 20), acc=st.floats(1.0, 6.0),
       kind=st.sampled_from(["gaussian-1d", "random-1d", "gaussian-2d"]), seed=st.integers(0, 1000))
def test_mri_properties(H, W, acc, kind, seed):
    assume(acc <= min(H, W) / 2)
    cf = 0.5 / acc
    mask = operators.cartesian_mask((H, W), acc, center_fraction=cf, kind=kind, generator=torch.Generator().manual_seed(seed))
    assert mask.any()
    if int(cf * W) >= 1 or kind == "gaussian-2d":
        assert mask[H // 2, W // 2] == 1  # the centre is always sampled
    op = SingleCoilMRI(mask)
    assert _adjoint_error(op, seed) < 1e-5
    x = rand((1, 2, H, W), seed)
    z = x[0, 0].numpy() + 1j * x[0, 1].numpy()
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(z), norm="ortho")) * mask.numpy()
    y = op.A(x)
    np.testing.assert_allclose(y[0, 0].numpy() + 1j * y[0, 1].numpy(), ref, atol=1e-12)
    mc = MultiCoilMRI(mask, coil_maps=2)
    assert _adjoint_error(mc, seed) < 1e-5


@settings(max_examples=8, deadline=None)
@given(size=st.integers(4, 20), n=st.integers(1, 9), fan=st.booleans(), circle=st.booleans(), seed=st.integers(0, 1000))
def test_ct_properties(size, n, fan, circle, seed):
    angles = (torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 360).tolist()
    op = CT(size, angles=angles, fan_beam=fan, circle=circle and not fan, normalize=False)
    assert _adjoint_error(op, seed) < 1e-5
    # line integrals of a non-negative image are non-negative, and of the constant 1 inside
    # the disc at most the diameter (+1 pixel of bilinear spread)
    assert float(op.A(torch.ones(1, *op.x_shape)).max()) <= size * 2**0.5 + 2


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 8), n=st.integers(1, 8), batch=st.booleans(), seed=st.integers(0, 1000))
def test_matrix_properties(m, n, batch, seed):
    M = rand((3, m, n) if batch else (m, n), seed)
    op = Matrix(M)
    assert _adjoint_error(op, seed, batch=3) < 1e-5
    x = rand((3, n), seed + 1)
    y = op.A(x)
    # Moore-Penrose: A A^+ A = A on the data
    assert torch.allclose(op.A(op.A_dagger(y)), y, atol=1e-8)


def test_folded_parameters_cannot_be_changed_silently():
    mri = operators.make("mri-4x", size=8)
    with pytest.raises(NotImplementedError):
        mri.A(torch.zeros(1, 2, 8, 8), mask=torch.ones(8, 8))
    blur = operators.make("blur-uniform", size=8, kernel_size=3)
    with pytest.raises(NotImplementedError):
        blur.A(torch.zeros(1, 1, 8, 8), filter=torch.ones(1, 1, 3, 3))


@pytest.mark.parametrize("module", ["matrix", "ct", "mri", "masks", "blur", "volume", "noise", "common", "complex", "svd"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"invdiff.operators.{module}")
    res = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


def test_ct_poisson_noise_statistics():
    # y = g Poisson(Ax / g): per draw, S = sum(y - Ax) has mean 0 and variance g * sum(Ax)
    g, n = 0.01, 400
    op = operators.make("ct-sparse-view", size=16, views=8, gain=g, generator=torch.Generator().manual_seed(0))
    x = smooth_image((1, 16, 16)).float()
    Ax = op.A(x)
    S = (op(x.expand(n, -1, -1, -1)) - Ax).sum(dim=(1, 2, 3)).double()
    v = g * float(Ax.sum())
    assert abs(float(S.mean())) < 5 * (v / n) ** 0.5  # z-score of the mean, 5 sd
    assert abs(float(S.var()) / v - 1) < 5 * (2 / n) ** 0.5  # relative sd of a variance: sqrt(2/n)


def test_poisson_disc_mask_is_less_clustered_than_bernoulli():
    from invdiff.operators.masks import _density_2d, gaussian_mask_2d, poisson_disc_mask_2d

    shape, acc = (48, 48), 8
    p = _density_2d(shape, acc, 0.08, 0.35)

    def touching_pairs(m):  # 8-neighbour pairs of samples where sampling is random (p < 1)
        c = m * (p < 1)
        return float((c[1:] * c[:-1]).sum() + (c[:, 1:] * c[:, :-1]).sum() + (c[1:, 1:] * c[:-1, :-1]).sum() + (c[1:, :-1] * c[:-1, 1:]).sum())

    pd = poisson_disc_mask_2d(shape, acc, generator=torch.Generator().manual_seed(1))
    gm = gaussian_mask_2d(shape, acc, generator=torch.Generator().manual_seed(1))
    assert abs(float(pd.mean()) * acc - 1) < 0.03 and bool((pd[p >= 1] == 1).all())
    assert touching_pairs(pd) < 0.85 * touching_pairs(gm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_device_follows_the_operator(name):
    op = small(name).to("cuda")
    u = rand((2, *op.x_shape), 0, torch.float32).cuda()
    v = rand((2, *op.y_shape), 1, torch.float32).cuda()
    Au = op.A(u)
    assert Au.device.type == "cuda" and op.A_adjoint(v).device.type == "cuda"
    err = ((Au * v).sum() - (u * op.A_adjoint(v)).sum()).abs() / (Au.norm() * v.norm())
    assert err < 1e-5
    assert op.baseline(Au).device.type == "cuda"
