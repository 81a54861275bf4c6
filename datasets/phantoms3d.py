r"""Random 3D phantoms (CT attenuation volumes, complex MR-like volumes) by seed, at any size.

The 3D counterparts of :mod:`invdiff.datasets.phantoms`: the same recipe with ellipsoids in
place of ellipses, so that every axial slice (constant ``z``) is a phantom of the 2D family's
kind (a head ellipse with a rim, painted inner ellipses). Volumes have shape
``(n, C, D, H, W)`` (``D`` along ``z``) on the cube :math:`[-1, 1]^3`. Each ellipsoid, rotated by
:math:`\theta` about the ``z`` axis, is the set

.. math::
    \Big(\frac{(r - c)\cdot u_\theta}{a}\Big)^2 + \Big(\frac{(r - c)\cdot u_\theta^\perp}{b}\Big)^2
    + \Big(\frac{z - c_z}{c}\Big)^2 \le 1,

with an anti-aliased edge one voxel wide, painted over what is below it
(``img = (1 - m) img + m v``, values stay in [0, 1]). The head ellipsoid is elongated along
``z`` (semi-axis :math:`c \in [1.3, 1.6]`), so that the axial slices keep at least 64 % of the
central slice's size and resemble the 2D training phantoms; the slices near the ends are the
smaller heads the 2D family does not draw (see ``datasets/phantoms3d.md``).

The volume is evaluated on any set of ``z`` planes: :func:`axial_slices` draws one random axial
slice of each of ``n`` random volumes at the cost of one 2D phantom, which is how a 2D prior
is trained on slices of the 3D family (generators ``ct-phantom3d-slices`` and
``mri-phantom3d-slices`` of :data:`invdiff.datasets.phantoms.GENERATORS`).

>>> import torch
>>> v = ct_phantoms3d(1, size=16, generator=torch.Generator().manual_seed(0))
>>> v.shape, bool(v.min() >= 0), bool(v.max() <= 1)
(torch.Size([1, 1, 16, 16, 16]), True, True)
"""
from __future__ import annotations

import math

import torch

from invdiff.datasets.phantoms import TEST_SEED, _uniform

__all__ = ["ct_phantoms3d", "mri_phantoms3d", "axial_slices", "test_volumes", "ellipsoid_masks", "TEST_SEED"]


def _coords(size: int, n_points: int, device, dtype) -> torch.Tensor:
    return (torch.arange(n_points, device=device, dtype=dtype) + 0.5) / size * 2 - 1


def ellipsoid_masks(p: dict, z: torch.Tensor, size: int) -> torch.Tensor:
    """Anti-aliased masks ``(n, k, Z, H, W)`` of ellipsoids with parameters ``p`` (each (n, k):
    ``cx, cy, cz, a, b, c, th``) on the planes ``z`` (``(n, Z)``, in [-1, 1]) of a ``size`` grid."""
    t = _coords(size, size, z.device, z.dtype)
    yy, xx = t[:, None], t[None, :]
    e = {k: v[..., None, None, None] for k, v in p.items()}  # (n, k, 1, 1, 1)
    dx, dy = xx - e["cx"], yy - e["cy"]
    dz = z[:, None, :, None, None] - e["cz"]
    cos, sin = torch.cos(e["th"]), torch.sin(e["th"])
    u = (dx * cos + dy * sin) / e["a"]
    v = (-dx * sin + dy * cos) / e["b"]
    w = dz / e["c"]
    r = torch.sqrt(u * u + v * v + w * w)
    width = (2.0 / size) / torch.minimum(torch.minimum(e["a"], e["b"]), e["c"])
    return ((1 - r) / width + 0.5).clamp(0, 1)


def _paint(img, masks, values, active):
    for k in range(masks.shape[1]):
        m = masks[:, k : k + 1] * active[:, k, None, None, None, None]
        img = img * (1 - m) + m * values[:, k, None, None, None, None]
    return img


def _head(n, g, device, dtype) -> dict:
    u = lambda lo, hi: _uniform((n, 1), lo, hi, g, device, dtype)  # noqa: E731
    return {"cx": u(-0.05, 0.05), "cy": u(-0.05, 0.05), "cz": u(-0.05, 0.05),
            "a": u(0.62, 0.85), "b": u(0.75, 0.92), "c": u(1.3, 1.6), "th": u(-0.3, 0.3)}


def _shrink(head: dict, t: torch.Tensor) -> dict:
    return {**head, "a": head["a"] - t, "b": head["b"] - t, "c": head["c"] - t}


def _inner(n, k, head, g, device, dtype, lo=0.04, hi=0.35, hi_z=0.5) -> dict:
    """``k`` random ellipsoids inside ``head`` (centres within 0.7 of its radii, ``z`` of the
    centres clipped to [-0.9, 0.9] so that they lie in the field of view)."""
    u = lambda lo_, hi_: _uniform((n, k), lo_, hi_, g, device, dtype)  # noqa: E731
    rho = 0.7 * torch.sqrt(u(0, 1))
    ang = u(0, 2 * math.pi)
    px, py = rho * torch.cos(ang) * head["a"], rho * torch.sin(ang) * head["b"]
    c, s = torch.cos(head["th"]), torch.sin(head["th"])
    cz = (head["cz"] + 0.7 * u(-1, 1) * head["c"]).clamp(-0.9, 0.9)
    a, b, cc = u(lo, hi), u(lo, hi), u(lo, hi_z)
    room = (1 - rho) * torch.minimum(head["a"], head["b"])
    return {"cx": head["cx"] + px * c - py * s, "cy": head["cy"] + px * s + py * c, "cz": cz,
            "a": torch.minimum(a, room), "b": torch.minimum(b, room), "c": cc, "th": u(0, math.pi)}


def _sorted(p: dict) -> dict:
    order = torch.argsort(-(p["a"] * p["b"] * p["c"]), dim=1)  # largest first
    return {k: v.gather(1, order) for k, v in p.items()}


def _smooth3(n, size, z, n_waves, max_freq, g, device, dtype) -> torch.Tensor:
    """Smooth random field ``mean_j cos(pi f_j . r + phi_j)`` on the planes ``z``: (n, 1, Z, H, W)."""
    t = _coords(size, size, z.device, z.dtype)
    f = _uniform((n, n_waves, 3), -max_freq, max_freq, g, device, dtype)
    phi = _uniform((n, n_waves), 0, 2 * math.pi, g, device, dtype)
    arg = (math.pi * (f[..., 0, None, None, None] * t[None, None, None, None, :]
                      + f[..., 1, None, None, None] * t[None, None, None, :, None]
                      + f[..., 2, None, None, None] * z[:, None, :, None, None]) + phi[..., None, None, None])
    return torch.cos(arg).mean(dim=1, keepdim=True)


def _check(n, size, depth):
    for name, v, low in (("n", n, 1), ("size", size, 8), ("depth", depth, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {v!r}")


def _planes(n, size, depth, z, device, dtype) -> torch.Tensor:
    if z is not None:
        return z.to(device=device, dtype=dtype)
    return _coords(depth, depth, device, dtype).expand(n, depth)


def _ct(n, size, z, g, device, dtype, max_ellipsoids=16) -> torch.Tensor:
    head = _head(n, g, device, dtype)
    thick = _uniform((n, 1), 0.03, 0.08, g, device, dtype)
    inner_head = _shrink(head, thick)
    inner = ellipsoid_masks(inner_head, z, size)
    rim = _uniform((n,), 0.8, 1.0, g, device, dtype).reshape(n, 1, 1, 1, 1)
    tissue = _uniform((n,), 0.1, 0.35, g, device, dtype).reshape(n, 1, 1, 1, 1)
    img = ellipsoid_masks(head, z, size) * rim
    img = img * (1 - inner) + inner * tissue
    k = max_ellipsoids
    count = 6 + torch.floor(_uniform((n,), 0, 1, g, device, dtype) * (k - 5)).long()  # in [6, k]
    active = (torch.arange(k, device=img.device)[None] < count[:, None]).to(dtype)
    p = _sorted(_inner(n, k, inner_head, g, device, dtype))
    img = _paint(img, ellipsoid_masks(p, z, size) * inner, _uniform((n, k), 0, 0.8, g, device, dtype), active)
    pb = _inner(n, 1, inner_head, g, device, dtype, 0.03, 0.1, 0.15)
    bval = _uniform((n, 1), 0.6, 1.0, g, device, dtype)
    bon = (_uniform((n, 1), 0, 1, g, device, dtype) < 0.5).to(dtype)
    return _paint(img, ellipsoid_masks(pb, z, size) * inner, bval, bon).clamp(0, 1)


def _mri(n, size, z, g, device, dtype, max_ellipsoids=12, max_phase=math.pi / 2) -> torch.Tensor:
    head = _head(n, g, device, dtype)
    thick = _uniform((n, 1), 0.02, 0.05, g, device, dtype)
    inner_head = _shrink(head, thick)
    inner = ellipsoid_masks(inner_head, z, size)
    rim = _uniform((n,), 0.7, 1.0, g, device, dtype).reshape(n, 1, 1, 1, 1)
    background = 0.5 + 0.15 * _smooth3(n, size, z, 4, 1.5, g, device, dtype)
    mag = ellipsoid_masks(head, z, size) * rim
    mag = mag * (1 - inner) + inner * background
    k = max_ellipsoids
    count = 6 + torch.floor(_uniform((n,), 0, 1, g, device, dtype) * (k - 5)).long()  # in [6, k]
    active = (torch.arange(k, device=mag.device)[None] < count[:, None]).to(dtype)
    p = _sorted(_inner(n, k, inner_head, g, device, dtype))
    mag = _paint(mag, ellipsoid_masks(p, z, size) * inner, _uniform((n, k), 0.05, 1.0, g, device, dtype), active)
    mag = (mag * (1 + 0.1 * _smooth3(n, size, z, 3, 1.0, g, device, dtype))).clamp(0, 1)
    phase = max_phase * _smooth3(n, size, z, 3, 1.0, g, device, dtype)
    phase = phase + _uniform((n,), -math.pi, math.pi, g, device, dtype).reshape(n, 1, 1, 1, 1)
    return torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1)


def ct_phantoms3d(n: int, size: int = 64, depth: int | None = None, generator: torch.Generator | None = None,
                  device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random 3D CT phantoms ``(n, 1, depth, size, size)`` in [0, 1] (``depth`` default ``size``).

    A head ellipsoid with a rim ("skull", thickness 3-8 %, intensity 0.8-1), soft tissue 0.1-0.35,
    6 to 16 inner ellipsoids (more than the 2D family's 3-10, as a plane cuts only some) (intensity 0-0.8, painted largest first) and, with probability 1/2,
    a small bright ellipsoid (0.6-1): the 2D recipe of :func:`~invdiff.datasets.phantoms.ct_phantoms`
    in 3D. The ``depth`` planes sample ``z`` in [-1, 1] (voxels are anisotropic if ``depth != size``).

    >>> ct_phantoms3d(2, size=8, depth=4, generator=torch.Generator().manual_seed(1)).shape
    torch.Size([2, 1, 4, 8, 8])
    """
    depth = size if depth is None else depth
    _check(n, size, depth)
    return _ct(n, size, _planes(n, size, depth, None, device, dtype), generator, device, dtype)


def mri_phantoms3d(n: int, size: int = 64, depth: int | None = None, generator: torch.Generator | None = None,
                   device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random complex MR-like volumes ``(n, 2, depth, size, size)`` (real, imag), magnitude in [0, 1].

    The recipe of :func:`~invdiff.datasets.phantoms.mri_phantoms` in 3D: smooth background
    ``0.5 + 0.15 f(r)``, rim 0.7-1, 6 to 12 ellipsoids (0.05-1), shading ``1 + 0.1 f(r)`` and a smooth
    phase ``(pi/2) f(r) + c``, every ``f`` a random low-frequency 3D cosine field.

    >>> x = mri_phantoms3d(1, size=8, generator=torch.Generator().manual_seed(1))
    >>> x.shape, bool((x.pow(2).sum(1).sqrt() <= 1 + 1e-6).all())
    (torch.Size([1, 2, 8, 8, 8]), True)
    """
    depth = size if depth is None else depth
    _check(n, size, depth)
    return _mri(n, size, _planes(n, size, depth, None, device, dtype), generator, device, dtype)


def axial_slices(kind: str, n: int, size: int = 64, generator: torch.Generator | None = None, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One axial slice, at ``z`` uniform in [-1, 1], of each of ``n`` random volumes of family
    ``kind`` (``"ct"`` or ``"mri"``): ``(n, C, size, size)``, at the cost of ``n`` 2D phantoms.

    >>> axial_slices("ct", 3, size=16, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 16, 16])
    """
    if kind not in ("ct", "mri"):
        raise ValueError(f"kind: expected 'ct' or 'mri', got {kind!r}")
    _check(n, size, 1)
    z = _uniform((n, 1), -1.0, 1.0, generator, device, dtype)
    return (_ct if kind == "ct" else _mri)(n, size, z, generator, device, dtype)[:, :, 0]


def test_volumes(kind: str, n: int = 2, size: int = 64, depth: int | None = None, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The fixed held-out volumes of family ``kind`` (``"ct"``/``"mri"``): ``n`` draws from ``TEST_SEED``."""
    if kind not in ("ct", "mri"):
        raise ValueError(f"kind: expected 'ct' or 'mri', got {kind!r}")
    g = torch.Generator().manual_seed(TEST_SEED)
    fn = ct_phantoms3d if kind == "ct" else mri_phantoms3d
    return fn(n, size=size, depth=depth, generator=g, dtype=dtype).to(device)


test_volumes.__test__ = False
