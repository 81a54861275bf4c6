"""Cartesian MRI sampling masks with an ``acceleration`` and a fully sampled k-space centre.

- 1D (phase-encode lines): deepinv's mask generators (``gaussian``: the tail-adjusted Gaussian
  density of Schlemper et al. 2017; ``random``: uniform; ``equispaced``: fastMRI's).
- 2D (both phase-encode directions, as in 3D Cartesian or CS-MRI): a variable-density
  Bernoulli mask with the Gaussian density :math:`p(k) = \\min(1, c\\, e^{-|k|^2 / 2 s^2})`
  (Lustig et al. 2007), ``c`` found by bisection so that the expected sampled fraction is
  ``1 / acceleration``, and a fully sampled central square; or a variable-density Poisson-disc
  mask (the same density, but samples at least :math:`r(k) \\propto p(k)^{-1/2}` apart, so
  without the clusters and holes of independent sampling; Vasanawala et al. 2011).

Masks are ``(H, W)`` float tensors of 0/1, centred (k = 0 at index ``(H // 2, W // 2)``) as
deepinv's MRI operators expect. Every mask takes a ``torch.Generator``.
"""
from __future__ import annotations

import torch

KINDS = ("gaussian-1d", "random-1d", "equispaced-1d", "gaussian-2d", "poisson-2d")


def _check(shape, acceleration, center_fraction) -> tuple[int, int]:
    if len(shape) != 2 or any((not isinstance(s, int)) or s < 2 for s in shape):
        raise ValueError(f"shape: expected (H, W) with H, W >= 2, got {shape!r}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration: expected >= 1, got {acceleration}")
    if center_fraction is not None and not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction: expected a value in [0, 1], got {center_fraction}")
    return shape


def cartesian_mask(
    shape: tuple[int, int],
    acceleration: float = 4,
    center_fraction: float | None = None,
    kind: str = "gaussian-1d",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""A centred ``(H, W)`` sampling mask of about ``H W / acceleration`` samples.

    ``kind``: ``"gaussian-1d"``, ``"random-1d"``, ``"equispaced-1d"`` (vertical lines, deepinv's
    generators; ``center_fraction`` of the columns always sampled, default 0.08 below 8x, 0.04
    from 8x) or ``"gaussian-2d"`` (variable-density points, :func:`gaussian_mask_2d`).

    >>> m = cartesian_mask((32, 32), acceleration=4, generator=torch.Generator().manual_seed(0))
    >>> m.shape, bool(m[:, 16].all())
    (torch.Size([32, 32]), True)
    """
    H, W = _check(shape, acceleration, center_fraction)
    if kind == "gaussian-2d":
        return gaussian_mask_2d(shape, acceleration, center_fraction if center_fraction is not None else 0.08, generator=generator)
    if kind == "poisson-2d":
        return poisson_disc_mask_2d(shape, acceleration, center_fraction if center_fraction is not None else 0.08, generator=generator)
    from deepinv.physics.generator import EquispacedMaskGenerator, GaussianMaskGenerator, RandomMaskGenerator

    gens = {"gaussian-1d": GaussianMaskGenerator, "random-1d": RandomMaskGenerator, "equispaced-1d": EquispacedMaskGenerator}
    if kind not in gens:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    if W // acceleration < 1:
        raise ValueError(f"acceleration {acceleration} leaves no line of the {W} columns (need acceleration <= {W})")
    gen = gens[kind]((H, W), acceleration=acceleration, center_fraction=center_fraction, rng=generator, device=generator.device)
    mask = gen.step(batch_size=1)["mask"][0, 0].to(torch.float32)
    if not bool(mask.any()):
        raise ValueError(f"the {kind} mask of acceleration {acceleration} on {W} columns is empty; lower the acceleration")
    return mask


def _density_2d(shape, acceleration, center_fraction, width) -> torch.Tensor:
    """The sampling probability of :func:`gaussian_mask_2d` (1 on the centre, mean 1/acceleration)."""
    H, W = _check(shape, acceleration, center_fraction)
    ky = torch.linspace(-1, 1, H, dtype=torch.float64)[:, None]
    kx = torch.linspace(-1, 1, W, dtype=torch.float64)[None, :]
    density = torch.exp(-(kx**2 + ky**2) / (2 * width**2))
    centre = torch.zeros(H, W, dtype=torch.bool)
    ch, cw = max(1, round(center_fraction * H)), max(1, round(center_fraction * W))
    centre[H // 2 - ch // 2 : H // 2 - ch // 2 + ch, W // 2 - cw // 2 : W // 2 - cw // 2 + cw] = True
    target = 1.0 / acceleration
    if centre.double().mean() > target:
        raise ValueError(f"center_fraction={center_fraction} samples more than 1/acceleration={target:.3g} of k-space")

    def prob(c: float) -> torch.Tensor:
        return torch.where(centre, torch.ones_like(density), (c * density).clamp(max=1.0))

    lo, hi = 0.0, 1.0
    while prob(hi).mean() < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if prob(mid).mean() < target else (lo, mid)
    return prob(hi)


def gaussian_mask_2d(
    shape: tuple[int, int],
    acceleration: float = 8,
    center_fraction: float = 0.08,
    width: float = 0.35,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""2D variable-density mask: independent Bernoulli samples with probability

    .. math::
        p(k) = \min\bigl(1,\; c\, e^{-(k_x^2 + k_y^2) / (2 s^2)}\bigr), \quad k \in [-1, 1]^2,

    :math:`p = 1` on the central ``center_fraction`` square, and ``c`` such that
    :math:`\operatorname{mean}(p) = 1 / \text{acceleration}` (bisection). ``s = width``.

    >>> m = gaussian_mask_2d((64, 64), 8, generator=torch.Generator().manual_seed(0))
    >>> abs(m.mean().item() - 1 / 8) < 0.03
    True
    """
    p = _density_2d(shape, acceleration, center_fraction, width)
    H, W = shape
    u = torch.rand(H, W, generator=generator, dtype=torch.float64, device=generator.device if generator else None).cpu()
    return (u < p).to(torch.float32)


def poisson_disc_mask_2d(
    shape: tuple[int, int],
    acceleration: float = 8,
    center_fraction: float = 0.08,
    width: float = 0.35,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""2D variable-density Poisson-disc mask (dart throwing, Vasanawala et al. 2011).

    Candidates are visited in a random order (``generator``) and accepted when no accepted
    sample lies closer than

    .. math::
        r(k) = \frac{r_0}{\sqrt{p(k)}}

    (``p`` the density of :func:`gaussian_mask_2d`); ``r_0`` is set by a fixed-point iteration (count ~ r_0^-2) so that about
    ``H W / acceleration`` samples are taken (with the fully sampled centre added).

    >>> m = poisson_disc_mask_2d((32, 32), 4, generator=torch.Generator().manual_seed(0))
    >>> abs(m.mean().item() - 1 / 4) < 0.03
    True
    """
    import numpy as np

    p = _density_2d(shape, acceleration, center_fraction, width).numpy()
    H, W = shape
    centre = p >= 1.0
    target = H * W / acceleration
    order = torch.randperm(H * W, generator=generator, device=generator.device if generator else None).cpu().numpy()
    ys, xs = np.divmod(order, W)

    def throw(r0: float) -> np.ndarray:
        r = r0 / np.sqrt(np.maximum(p, 1e-12))
        occ = centre.copy()
        for y, x in zip(ys, xs):
            if occ[y, x]:
                continue
            rk = r[y, x]
            R = int(np.ceil(rk))
            y0, y1, x0, x1 = max(0, y - R), min(H, y + R + 1), max(0, x - R), min(W, x + R + 1)
            win = occ[y0:y1, x0:x1]
            if win.any():
                dy, dx = np.nonzero(win)
                if ((dy + y0 - y) ** 2 + (dx + x0 - x) ** 2 < rk * rk).any():
                    continue
            occ[y, x] = True
        return occ

    # the number of samples scales like r0^-2 (outside the centre): fixed-point iteration
    n_centre = centre.sum()
    r0, best = 0.7, None
    for _ in range(8):
        occ = throw(r0)
        if best is None or abs(occ.sum() - target) < abs(best.sum() - target):
            best = occ
        if abs(occ.sum() - target) <= 0.02 * target:
            break
        r0 *= float(np.sqrt(max(occ.sum() - n_centre, 1) / max(target - n_centre, 1)))
    return torch.from_numpy(best.astype(np.float32))
