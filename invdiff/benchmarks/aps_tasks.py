r"""The digits tasks of ``invdiff bench aps``: operators on 8x8 images in [0, 1] and the priors.

=============  ===============================================================================
task           operator (Gaussian noise ``sigma = 0.05`` on every measurement)
=============  ===============================================================================
inpainting     keep a fixed random 35% of the pixels (seeded mask)
sr2            2x super-resolution: 2x2 average pooling to 4x4
deblur         Gaussian blur, ``blur_sigma = 1`` px, circular boundary (``blur-gaussian``)
saturation     nonlinear: :math:`y = \tanh(3\, k * x)`, the same blur followed by a saturating sensor
=============  ===============================================================================

Continuous prior for DPS: the Gaussian kernel density of the training digits,
:math:`p(x) = \frac1N \sum_n \mathcal N(x; x_n, h^2 I)` (a :class:`GaussianMixture`, exact
denoiser at every noise level), the continuous counterpart of the discrete empirical oracle.
"""
from __future__ import annotations

import torch
from deepinv.physics import GaussianNoise, Inpainting, LinearPhysics, Physics

__all__ = ["TASKS", "make_task", "digits_signals", "kde_prior"]

TASKS = ("inpainting", "sr2", "deblur", "saturation")
SIGMA = 0.05


class _AvgPool2(LinearPhysics):
    """2x2 average pooling (adjoint: nearest upsampling / 4)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.x_shape = (1, 8, 8)

    def A(self, x, **kw):
        return torch.nn.functional.avg_pool2d(x, 2)

    def A_adjoint(self, y, **kw):
        return torch.nn.functional.interpolate(y, scale_factor=2, mode="nearest") / 4


class _Saturation(Physics):
    """:math:`y = \\tanh(3\\, k * x)` with the Gaussian blur ``k`` (nonlinear, differentiable)."""

    def __init__(self, blur, **kw):
        super().__init__(**kw)
        self.blur, self.x_shape = blur, (1, 8, 8)

    def A(self, x, **kw):
        return torch.tanh(3.0 * self.blur.A(x))


def make_task(name: str, generator: torch.Generator | None = None, dtype=torch.float32):
    """The operator of task ``name`` (see the module table), with its noise model."""
    from invdiff.operators import make

    noise = GaussianNoise(SIGMA)
    if name == "inpainting":
        g = torch.Generator().manual_seed(7)
        mask = (torch.rand(1, 8, 8, generator=g) < 0.35).to(dtype)
        op = Inpainting(img_size=(1, 8, 8), mask=mask, noise_model=noise)
        op.x_shape = (1, 8, 8)
        return op
    if name == "sr2":
        return _AvgPool2(noise_model=noise)
    blur = make("blur-gaussian", size=8, blur_sigma=1.0, kernel_size=5, sigma=SIGMA, dtype=dtype)
    if name == "deblur":
        return blur
    if name == "saturation":
        return _Saturation(blur, noise_model=noise)
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
