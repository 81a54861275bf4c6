r"""The tasks of ``invdiff bench aps``: operators on 8x8 digits and 32x32 phantoms in [0, 1], and
the continuous priors of the DPS reference.

=============  ===============================================================================
task           operator (Gaussian noise ``sigma = 0.05`` on every measurement)
=============  ===============================================================================
inpainting     keep a fixed random 35% of the pixels (seeded mask)
sr2            2x super-resolution: 2x2 average pooling to 4x4
deblur         Gaussian blur, ``blur_sigma = 1`` px, circular boundary (``blur-gaussian``)
saturation     nonlinear: :math:`y = \tanh(3\, k * x)`, the same blur followed by a saturating sensor
=============  ===============================================================================

The same four operators act on 32x32 phantoms (``size=32``): 35% of the pixels kept, 2x2
averaging to 16x16, a Gaussian blur of 1.5 px (9x9 kernel; 1 px, 5x5 on the digits) and the
saturating sensor on that blur.

Continuous prior for DPS: the Gaussian kernel density of the training digits,
:math:`p(x) = \frac1N \sum_n \mathcal N(x; x_n, h^2 I)` (a :class:`GaussianMixture`, exact
denoiser at every noise level), the continuous counterpart of the discrete empirical oracle.
Phantoms: the shipped ``ct-phantom-64`` network; DPS draws a 64x64 phantom ``u`` and the
32x32 estimate is its 2x2 average, :math:`x = P u`, with the task's operator applied to
:math:`P u` (:class:`Pooled`; the phantom generator draws the same ellipses at every
resolution, so :math:`P u` follows the 32x32 phantoms up to the anti-aliasing of edges).
"""
from __future__ import annotations

import torch
from deepinv.physics import GaussianNoise, Inpainting, LinearPhysics, Physics

__all__ = ["TASKS", "make_task", "digits_signals", "kde_prior", "phantom_signals", "Pooled"]

TASKS = ("inpainting", "sr2", "deblur", "saturation")
SIGMA = 0.05


class _AvgPool2(LinearPhysics):
    """2x2 average pooling (adjoint: nearest upsampling / 4)."""

    def __init__(self, size: int = 8, **kw):
        super().__init__(**kw)
        self.x_shape = (1, size, size)

    def A(self, x, **kw):
        return torch.nn.functional.avg_pool2d(x, 2)

    def A_adjoint(self, y, **kw):
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest") / 4


class _Saturation(Physics):
    """:math:`y = \\tanh(3\\, k * x)` with the Gaussian blur ``k`` (nonlinear, differentiable)."""

    def __init__(self, blur, size: int = 8, **kw):
        super().__init__(**kw)
        self.blur, self.x_shape = blur, (1, size, size)

    def A(self, x, **kw):
        return torch.tanh(3.0 * self.blur.A(x))


class Pooled(Physics):
    r"""``op`` applied to the 2x2 average of a twice larger signal: :math:`\mathcal A(P u)` (for DPS
    with a 64x64 prior on 32x32 tasks); :meth:`pool` gives :math:`P u`."""

    def __init__(self, op, **kw):
        super().__init__(noise_model=op.noise_model, **kw)
        c, h, w = op.x_shape
        self.op, self.x_shape = op, (c, 2 * h, 2 * w)

    @staticmethod
    def pool(u):
        return torch.nn.functional.avg_pool2d(u, 2)

    def A(self, u, **kw):
        return self.op.A(self.pool(u))


def make_task(name: str, generator: torch.Generator | None = None, dtype=torch.float32, size: int = 8):
    """The operator of task ``name`` on ``size x size`` images (8: digits, 32: phantoms; see the
    module table), with its noise model."""
    from invdiff.operators import make

    if size not in (8, 32):
        raise ValueError(f"size: expected 8 (digits) or 32 (phantoms), got {size!r}")
    noise = GaussianNoise(SIGMA)
    if name == "inpainting":
        g = torch.Generator().manual_seed(7)
        mask = (torch.rand(1, size, size, generator=g) < 0.35).to(dtype)
        op = Inpainting(img_size=(1, size, size), mask=mask, noise_model=noise)
        op.x_shape = (1, size, size)
        return op
    if name == "sr2":
        return _AvgPool2(size, noise_model=noise)
    bs, ks = (1.0, 5) if size == 8 else (1.5, 9)
    blur = make("blur-gaussian", size=size, blur_sigma=bs, kernel_size=ks, sigma=SIGMA, dtype=dtype)
    if name == "deblur":
        return blur
    if name == "saturation":
        return _Saturation(blur, size, noise_model=noise)
    raise ValueError(f"task: expected one of {TASKS}, got {name!r}")


def digits_signals(split: str, n: int | None = None, dtype=torch.float32):
    """``(tokens (N, 64), images (N, 1, 8, 8) in [0, 1])`` of a digits split (the first ``n``)."""
    from invdiff.datasets.digits import load_digits

    images, _ = load_digits(split)
    if n is not None:
        images = images[:n]
    tokens = images.reshape(images.shape[0], -1)
    return tokens, (images.to(dtype) / 16.0).unsqueeze(1)


def kde_prior(bandwidth: float = 0.05, dtype=torch.float32):
    """The Gaussian kernel density of the 1,497 training digits (bandwidth ``h``) as a GaussianMixture."""
    from invdiff.diffusion.gmm import GaussianMixture

    _, images = digits_signals("train", dtype=dtype)
    return GaussianMixture(torch.ones(images.shape[0], dtype=dtype), images, bandwidth ** 2)


PHANTOM_POOL = 64  # held-out phantoms drawn at once (test_set draws depend on n), then sliced


def phantom_signals(n: int, offset: int = 0, levels: int = 16, dtype=torch.float32):
    """``(tokens (n, 1024), images (n, 1, 32, 32))``: held-out 32x32 CT phantoms (images
    ``offset .. offset + n`` of ``test_set("ct-phantom", 64, 32)``, never used in training) and
    their tokens at ``levels`` intensities. The images are the continuous phantoms (the truth of
    every sampler); decoding the tokens gives the quantised ones."""
    from invdiff.datasets.phantoms import test_set
    from invdiff.diffusion.discrete.tokenizers import intensity_quantizer

    if offset < 0 or n < 1 or offset + n > PHANTOM_POOL:
        raise ValueError(f"expected 0 <= offset and offset + n <= {PHANTOM_POOL}, got offset={offset}, n={n}")
    x = test_set("ct-phantom", PHANTOM_POOL, 32, dtype=dtype)[offset:offset + n]
    return intensity_quantizer(levels, (1, 32, 32)).encode(x), x
