"""Random phantoms for CT and MRI, generated on the fly at any resolution.

Two families, both drawn from a ``torch.Generator`` so that a seed fixes the data exactly:

- :func:`ct_phantoms`: Shepp-Logan-like attenuation maps. A head ellipse with a bright rim
  ("skull") and a soft-tissue interior, then a random number of random ellipses (position,
  semi-axes, angle, intensity) painted inside. Values in ``[0, 1]``, shape ``(n, 1, H, W)``.
- :func:`mri_phantoms`: complex MR-like images. A smooth, slowly varying magnitude inside a head
  ellipse, random ellipses of different contrast, multiplied by a smooth random phase
  :math:`e^{i\\varphi(r)}`. Returned as two real channels (real, imag), shape ``(n, 2, H, W)``,
  with magnitude in ``[0, 1]``.

Each ellipse is the set

.. math::
    \\Big(\\frac{(r - c) \\cdot u_\\theta}{a}\\Big)^2 + \\Big(\\frac{(r - c) \\cdot u_\\theta^\\perp}{b}\\Big)^2 \\le 1,

drawn with an anti-aliased edge one pixel wide (so the phantoms are the same objects at every
resolution), and painted over what is below it: ``img = (1 - m) img + m v``, which keeps the
values in ``[0, 1]``. This follows the random-ellipse phantoms of learned CT reconstruction
(e.g. Adler & Oektem, "Learned primal-dual reconstruction", IEEE TMI 2018), derived from
Shepp & Logan (1974).

Held-out data: :func:`test_set` draws from a seed (``TEST_SEED``) that training never uses
(training configs use small seeds), so the held-out phantoms are independent draws of the
same distribution.

>>> import torch
>>> x = ct_phantoms(4, size=32, generator=torch.Generator().manual_seed(0))
>>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
(torch.Size([4, 1, 32, 32]), True, True)
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from invdiff.utils.random import rand

__all__ = ["ct_phantoms", "mri_phantoms", "test_set", "GENERATORS", "make_generator", "TEST_SEED"]

#: Seed of the held-out test sets (training configs use other seeds).
TEST_SEED = 20_240_917


def _check(n: int, size: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size: expected an int >= 8, got {size!r}")


def _grid(size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1], as (1, 1, H, W) tensors (x: columns, y: rows)."""
    t = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return xx[None, None], yy[None, None]


def ellipse_masks(cx, cy, a, b, theta, size: int) -> torch.Tensor:
    """Anti-aliased masks of ellipses, ``(n, k, H, W)`` in [0, 1], for parameters of shape (n, k).

    The edge is a linear ramp one pixel wide across the boundary (in the normalised radius
    scaled by the smaller semi-axis), so a mask is 1 inside, 0 outside.
    """
    xx, yy = _grid(size, cx.device, cx.dtype)
    dx = xx - cx[..., None, None]
    dy = yy - cy[..., None, None]
    c, s = torch.cos(theta)[..., None, None], torch.sin(theta)[..., None, None]
    u = (dx * c + dy * s) / a[..., None, None]
    v = (-dx * s + dy * c) / b[..., None, None]
    r = torch.sqrt(u * u + v * v)
    pixel = 2.0 / size  # pixel width in normalised coordinates
    width = pixel / torch.minimum(a, b)[..., None, None]
    return ((1 - r) / width + 0.5).clamp(0, 1)


def _uniform(shape, lo, hi, generator, device, dtype) -> torch.Tensor:
    return lo + (hi - lo) * rand(shape, generator=generator, device=device, dtype=dtype)


def _paint(img: torch.Tensor, masks: torch.Tensor, values: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Paint ellipse k over img in order: img <- (1 - m_k) img + m_k v_k, where active."""
    for k in range(masks.shape[1]):
        m = masks[:, k : k + 1] * active[:, k, None, None, None]
        img = img * (1 - m) + m * values[:, k, None, None, None]
    return img


def _smooth_field(n: int, size: int, n_waves: int, max_freq: float, generator, device, dtype) -> torch.Tensor:
    """A smooth random field ``sum_j cos(pi (f_j . r) + phi_j) / n_waves`` of shape (n, 1, H, W), in [-1, 1]."""
    xx, yy = _grid(size, device, dtype)
    f = _uniform((n, n_waves, 2), -max_freq, max_freq, generator, device, dtype)
    phi = _uniform((n, n_waves), 0, 2 * math.pi, generator, device, dtype)
    arg = math.pi * (f[..., 0, None, None] * xx + f[..., 1, None, None] * yy) + phi[..., None, None]
    return torch.cos(arg).mean(dim=1, keepdim=True)


def _head(n: int, generator, device, dtype):
    """Random head ellipse: centre, semi-axes, angle (each (n, 1))."""
    cx = _uniform((n, 1), -0.05, 0.05, generator, device, dtype)
    cy = _uniform((n, 1), -0.05, 0.05, generator, device, dtype)
    a = _uniform((n, 1), 0.62, 0.85, generator, device, dtype)
    b = _uniform((n, 1), 0.75, 0.92, generator, device, dtype)
    th = _uniform((n, 1), -0.3, 0.3, generator, device, dtype)
    return cx, cy, a, b, th


def _inner_ellipses(n, k, head, generator, device, dtype, min_axis=0.04, max_axis=0.35):
    """k random ellipses inside the head ellipse: returns (cx, cy, a, b, theta), each (n, k)."""
    hcx, hcy, ha, hb, hth = head
    # centre at radius rho < 0.7 of the head, in the head's frame
    rho = 0.7 * torch.sqrt(_uniform((n, k), 0, 1, generator, device, dtype))
    ang = _uniform((n, k), 0, 2 * math.pi, generator, device, dtype)
    u, v = rho * torch.cos(ang) * ha, rho * torch.sin(ang) * hb
    c, s = torch.cos(hth), torch.sin(hth)
    cx, cy = hcx + u * c - v * s, hcy + u * s + v * c
    a = _uniform((n, k), min_axis, max_axis, generator, device, dtype)
    b = _uniform((n, k), min_axis, max_axis, generator, device, dtype)
    # keep the ellipse roughly inside the head
    room = (1 - rho) * torch.minimum(ha, hb)
    a, b = torch.minimum(a, room), torch.minimum(b, room)
    th = _uniform((n, k), 0, math.pi, generator, device, dtype)
    return cx, cy, a, b, th


def ct_phantoms(
    n: int,
    size: int = 64,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    max_ellipses: int = 10,
) -> torch.Tensor:
    """Random Shepp-Logan-like CT phantoms, ``(n, 1, size, size)`` with values in [0, 1].

    A head ellipse with a rim of intensity in [0.8, 1] and thickness 3-8 % of the field of view,
    a soft-tissue interior in [0.1, 0.35], then between 3 and ``max_ellipses`` random inner
    ellipses with intensities in [0, 0.8], painted in order. Then a "bright" small ellipse with
    probability 1/2 (intensity in [0.6, 1]).

    >>> ct_phantoms(2, size=16, generator=torch.Generator().manual_seed(1)).shape
    torch.Size([2, 1, 16, 16])
    """
    _check(n, size)
    if max_ellipses < 3:
        raise ValueError(f"max_ellipses: expected >= 3, got {max_ellipses}")
    g = generator
    head = _head(n, g, device, dtype)
    outer = ellipse_masks(*head, size)  # (n, 1, H, W)
    thick = _uniform((n, 1), 0.03, 0.08, g, device, dtype)
    cx, cy, a, b, th = head
    inner = ellipse_masks(cx, cy, a - thick, b - thick, th, size)
    rim = _uniform((n,), 0.8, 1.0, g, device, dtype)[:, None, None, None]
    tissue = _uniform((n,), 0.1, 0.35, g, device, dtype)[:, None, None, None]
    img = outer * rim
    img = img * (1 - inner) + inner * tissue
    k = max_ellipses
    count = 3 + torch.floor(_uniform((n,), 0, 1, g, device, dtype) * (k - 2)).long()  # in [3, k]
    active = (torch.arange(k, device=img.device)[None, :] < count[:, None]).to(dtype)
    ecx, ecy, ea, eb, eth = _inner_ellipses(n, k, (cx, cy, a - thick, b - thick, th), g, device, dtype)
    # larger ellipses first so that small ones stay visible
    order = torch.argsort(-(ea * eb), dim=1)
    ecx, ecy, ea, eb, eth = (t.gather(1, order) for t in (ecx, ecy, ea, eb, eth))
    values = _uniform((n, k), 0.0, 0.8, g, device, dtype)
    img = _paint(img, ellipse_masks(ecx, ecy, ea, eb, eth, size) * inner, values, active)
    # one small bright structure with probability 1/2
    bcx, bcy, ba, bb, bth = _inner_ellipses(n, 1, (cx, cy, a - thick, b - thick, th), g, device, dtype, 0.03, 0.1)
    bval = _uniform((n, 1), 0.6, 1.0, g, device, dtype)
    bon = (_uniform((n, 1), 0, 1, g, device, dtype) < 0.5).to(dtype)
    img = _paint(img, ellipse_masks(bcx, bcy, ba, bb, bth, size) * inner, bval, bon)
    return img.clamp(0, 1)


def mri_phantoms(
    n: int,
    size: int = 64,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    max_ellipses: int = 8,
    max_phase: float = math.pi / 2,
) -> torch.Tensor:
    """Random complex MR-like phantoms as two channels (real, imag), ``(n, 2, size, size)``.

    Magnitude: a head ellipse with a smooth background intensity ``0.5 + 0.15 f(r)`` (``f`` a
    random low-frequency field in [-1, 1]), a thin fat-like rim in [0.7, 1], and 3 to
    ``max_ellipses`` structures of contrast in [0.05, 1] with a mild smooth shading. Phase: a
    smooth random field of amplitude ``max_phase`` plus a random constant, so that

    .. math:: x = |x|\\, e^{i \\varphi(r)}, \\qquad |x| \\in [0, 1].

    >>> x = mri_phantoms(2, size=16, generator=torch.Generator().manual_seed(1))
    >>> bool((x.pow(2).sum(1).sqrt() <= 1 + 1e-6).all())
    True
    """
    _check(n, size)
    if max_ellipses < 3:
        raise ValueError(f"max_ellipses: expected >= 3, got {max_ellipses}")
    g = generator
    head = _head(n, g, device, dtype)
    outer = ellipse_masks(*head, size)
    thick = _uniform((n, 1), 0.02, 0.05, g, device, dtype)
    cx, cy, a, b, th = head
    inner = ellipse_masks(cx, cy, a - thick, b - thick, th, size)
    rim = _uniform((n,), 0.7, 1.0, g, device, dtype)[:, None, None, None]
    background = 0.5 + 0.15 * _smooth_field(n, size, 4, 1.5, g, device, dtype)
    mag = outer * rim
    mag = mag * (1 - inner) + inner * background
    k = max_ellipses
    count = 3 + torch.floor(_uniform((n,), 0, 1, g, device, dtype) * (k - 2)).long()
    active = (torch.arange(k, device=mag.device)[None, :] < count[:, None]).to(dtype)
    ecx, ecy, ea, eb, eth = _inner_ellipses(n, k, (cx, cy, a - thick, b - thick, th), g, device, dtype)
    order = torch.argsort(-(ea * eb), dim=1)
    ecx, ecy, ea, eb, eth = (t.gather(1, order) for t in (ecx, ecy, ea, eb, eth))
    values = _uniform((n, k), 0.05, 1.0, g, device, dtype)
    mag = _paint(mag, ellipse_masks(ecx, ecy, ea, eb, eth, size) * inner, values, active)
    shading = 1 + 0.1 * _smooth_field(n, size, 3, 1.0, g, device, dtype)
    mag = (mag * shading).clamp(0, 1)
    phase = max_phase * _smooth_field(n, size, 3, 1.0, g, device, dtype)
    phase = phase + _uniform((n,), -math.pi, math.pi, g, device, dtype)[:, None, None, None]
    return torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


#: Phantom generators by name: ``name -> (function, number of channels)``.
GENERATORS: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "ct-phantom": (ct_phantoms, 1),
    "mri-phantom": (mri_phantoms, 2),
}


def _axial_slices(kind: str) -> Callable[..., torch.Tensor]:
    def fn(n, size=64, generator=None, device=None, dtype=torch.float32):
        from invdiff.datasets.phantoms3d import axial_slices  # lazy: phantoms3d imports this module

        return axial_slices(kind, n, size, generator=generator, device=device, dtype=dtype)

    fn.__name__ = f"{kind}_phantom3d_slices"
    return fn


# axial slices of random 3D phantoms (datasets/phantoms3d.md), to train 2D priors for 3D problems
GENERATORS["ct-phantom3d-slices"] = (_axial_slices("ct"), 1)
GENERATORS["mri-phantom3d-slices"] = (_axial_slices("mri"), 2)


def make_generator(name: str, **params) -> Callable[..., torch.Tensor]:
    """``sample(n, generator=None, device=None, dtype=float32)`` for the phantom family ``name``.

    ``params`` (e.g. ``size=64``) are fixed; they are what a training card records.

    >>> sample = make_generator("ct-phantom", size=32)
    >>> sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 32, 32])
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown phantom generator {name!r}; expected one of {sorted(GENERATORS)}")
    fn = GENERATORS[name][0]

    def sample(n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32):
        return fn(n, generator=generator, device=device, dtype=dtype, **params)

    sample.__name__ = f"{name}-sampler"
    return sample


def test_set(name: str, n: int = 16, size: int = 64, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed held-out phantoms of family ``name``: ``n`` draws from ``TEST_SEED``.

    Deterministic (the same tensors on every call, CPU generator), never used in training.

    >>> torch.equal(test_set("ct-phantom", 2, 16), test_set("ct-phantom", 2, 16))
    True
    """
    g = torch.Generator().manual_seed(TEST_SEED)
    return make_generator(name, size=size)(n, generator=g, dtype=dtype).to(device)


test_set.__test__ = False  # not a pytest test when imported into a test module
