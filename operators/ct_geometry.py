r"""Geometry helpers of :mod:`invdiff.operators.ct`: view angles and the rotation-centre convention.

:func:`centre_shift` moves deepinv's Radon sampling grids so that the rotation centre is
scikit-image's (pixel ``G // 2`` of the padded image, detector ``n // 2``) at every size.
"""
from __future__ import annotations

import torch


def as_angles(angles, full_range: float) -> torch.Tensor:
    """Angles in degrees as a float64 1-D tensor; an int ``n`` means ``n`` views on ``[0, full_range)``."""
    if isinstance(angles, bool):
        raise TypeError("angles: expected an int or a 1-D sequence of degrees, got a bool")
    if isinstance(angles, int):
        if angles < 1:
            raise ValueError(f"angles: expected at least 1 view, got {angles}")
        return torch.arange(angles, dtype=torch.float64) * (full_range / angles)
    t = torch.as_tensor(angles, dtype=torch.float64).cpu()
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"angles: expected a non-empty 1-D sequence of degrees, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("angles: expected finite values")
    return t


def centre_shift(grid: torch.Tensor, theta_deg: torch.Tensor, G: int, fan: dict | None) -> torch.Tensor:
    r"""The move of deepinv's sampling grid that puts the rotation centre on pixel ``G // 2``.

    deepinv's grids rotate about the middle of the ``G x G`` (padded) image, pixel
    :math:`c_0 = (G - 1) / 2`; scikit-image's ``radon`` rotates about :math:`c = \lfloor G/2 \rfloor`
    and puts the rotation axis on detector :math:`\lfloor n_{det}/2 \rfloor`. They agree for odd
    ``G`` (the returned shift is exactly zero, so the grid is unchanged bit for bit); for even
    ``G``, with :math:`\delta = c - c_0 = 1/2`, the parallel-beam sample of detector ``j`` and ray
    point ``k`` moves from :math:`c_0 + R_\theta(j - c_0, k - c_0)` to
    :math:`c + R_\theta(j - c, k - c)`, i.e. by :math:`\delta\,[(1, 1) - R_\theta (1, 1)]` pixels.
    The fan-beam geometry is translated by :math:`\delta (1, 1)` (rotation about ``c``) and its
    detector by :math:`-\delta_{det}` pixels (central ray on detector :math:`\lfloor n/2 \rfloor`).
    """
    delta = G // 2 - (G - 1) / 2
    th = torch.deg2rad(theta_deg.to(torch.float64))
    cos, sin = torch.cos(th), torch.sin(th)
    k = 2.0 / (G - 1)  # pixels -> grid_sample's normalised units (align_corners=True)
    n_angles = th.numel()
    if fan is None:
        shift = torch.stack([delta * (1 - cos - sin), delta * (1 + sin - cos)], -1) * k  # (n_angles, 2)
        n_det = grid.shape[2] // n_angles
        shift = shift.repeat_interleave(n_det, 0)[None, None]  # (1, 1, n_det * n_angles, 2)
        return shift.to(grid.dtype)
    n_det = fan["n_detector_pixels"]
    delta_det = n_det // 2 - (n_det - 1) / 2
    # deepinv's fan grid before rotation (its own units, 2 / G per pixel): ray abscissa x on
    # linspace(-1, 1, G), detector offset y_j L / 2 scaled by (x + R_s) / (R_s + R_d). Here the
    # detector moves by -delta_det pixels and the ray samples by delta along the ray, so that
    # they fall where the parallel beam samples (k - c); then rotation by theta, translation.
    unit = 2.0 / G
    R_s, R_d = fan["source_radius"] * unit, fan["detector_radius"] * unit
    sp = fan["detector_spacing"] * unit
    x = torch.linspace(-1.0, 1.0, G, dtype=torch.float64)[:, None]  # (G, 1) ray abscissae
    y = torch.linspace(-1.0, 1.0, n_det, dtype=torch.float64)[None, :]  # (1, n_det)
    s_r = delta * k
    dx = torch.full((G, n_det), s_r, dtype=torch.float64)
    dy = (y * (n_det - 1) * sp / 2 * s_r - delta_det * sp * (x + s_r + R_s)) / (R_s + R_d)  # (G, n_det)
    c, s_ = cos[None, :, None], sin[None, :, None]
    sx = c * dx[:, None] + s_ * dy[:, None] + delta * k  # (G, n_angles, n_det)
    sy = -s_ * dx[:, None] + c * dy[:, None] + delta * k
    shift = torch.stack([sx, sy], -1).reshape(1, G, n_angles * n_det, 2)
    return shift.to(grid.dtype)
