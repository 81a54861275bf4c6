r"""3D tasks of DiffusionMBIR (Chung et al., CVPR 2023): limited-angle CT volumes and CS-MRI
volumes with a different sampling mask on every slice.

- ``volume-ct`` (in :mod:`invdiff.operators.volume`): sparse-view CT (8 views) on every axial slice;
- ``volume-ct-limited-angle``: CT on every axial slice with views on [0, 90) degrees only;
- ``volume-mri-slices``: :class:`SliceMaskMRI`, single-coil Cartesian MRI of each slice with
  its own mask (the masks differ from slice to slice, so that the z-coupling of the
  reconstruction can fill in what one slice misses).

All three are linear with exact adjoints; the measurement of a volume ``(B, C, D, H, W)`` is
the stack of the slices' measurements.

>>> op = SliceMaskMRI(torch.ones(3, 8, 8))
>>> x = torch.randn(1, 2, 3, 8, 8)
>>> torch.allclose(op.A_adjoint(op.A(x)), x, atol=1e-5)
True
"""
from __future__ import annotations

import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin
from invdiff.operators.common import pop_common, resolve_common
from invdiff.operators.complex import to_channels, to_complex
from invdiff.operators.masks import cartesian_mask
from invdiff.operators.mri import centred_fft2
from invdiff.operators.registry import register
from invdiff.operators.volume import Volume

__all__ = ["SliceMaskMRI", "slice_masks"]


class SliceMaskMRI(OperatorMixin, LinearPhysics):
    r"""Single-coil Cartesian MRI of every axial slice with its own mask :math:`M_d`.

    .. math::
        y_{:, d} = M_d \odot \mathcal F_c\, x_{:, d}, \qquad
        (A^\top y)_{:, d} = \mathcal F_c^{H} (M_d \odot y_{:, d}), \qquad d = 1, \dots, D,

    with :math:`\mathcal F_c` the orthonormal centred 2D FFT (:func:`invdiff.operators.mri.centred_fft2`),
    so :math:`\|A\| = 1` and the zero-filled :math:`A^\top y` is the exact pseudo-inverse.
    Signals and measurements are complex volumes as two channels, ``(B, 2, D, H, W)``.

    :param masks: ``(D, H, W)`` binary masks, one per slice (k-space centred).
    :param sigma, gain, noise_model, generator, device, dtype: the common arguments
        (:mod:`invdiff.operators.common`; ``gain`` is rejected: k-space is complex).
    """

    supports_poisson = False

    def __init__(self, masks: torch.Tensor, sigma: float | None = None, gain: float | None = None,
                 noise_model: NoiseModel | None = None, generator: torch.Generator | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
            raise ValueError(f"masks: expected a (D, H, W) tensor, got {getattr(masks, 'shape', type(masks).__name__)}")
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks: expected binary values (0 or 1)")
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype, poisson=False)
        super().__init__(noise_model=common.noise_model, device=common.device)
        self.register_buffer("masks", masks.to(device=common.device, dtype=torch.float32))
        self.x_shape = (2, *masks.shape)
        self.y_shape = (2, *masks.shape)
        common.finish(self)

    def _mask(self, t: torch.Tensor) -> torch.Tensor:
        return self.masks.to(device=t.device, dtype=t.dtype)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y = M \odot \mathcal F_c x` slice by slice, ``(B, 2, D, H, W)``."""
        self.check_x(x)
        return to_channels(centred_fft2(to_complex(x), None) * self._mask(x))

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`x = \mathcal F_c^H (M \odot y)` slice by slice (zero-filled inverse FFT)."""
        self.check_y(y)
        return to_channels(centred_fft2(to_complex(y) * self._mask(y), None, inverse=True))

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """The pseudo-inverse: for binary masks, the zero-filled :meth:`A_adjoint`."""
        return self.A_adjoint(y)

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Zero-filled reconstruction (the exact pseudo-inverse)."""
        return self.A_adjoint(y)


def slice_masks(depth: int, size: int, acceleration: float = 4, kind: str = "gaussian-1d",
                center_fraction: float | None = None, seed: int = 0) -> torch.Tensor:
    """``(depth, size, size)`` masks of :func:`~invdiff.operators.masks.cartesian_mask`, an
    independent draw per slice from one seeded generator.

    >>> m = slice_masks(3, 64, acceleration=8)
    >>> m.shape, bool((m[0] != m[1]).any())
    (torch.Size([3, 64, 64]), True)
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: expected an int >= 1, got {depth!r}")
    g = torch.Generator().manual_seed(int(seed))
    return torch.stack([cartesian_mask((size, size), acceleration, center_fraction, kind=kind, generator=g)
                        for _ in range(depth)])


@register("volume-mri-slices", "CS-MRI of a (B, 2, D, N, N) volume with a different Cartesian mask on every slice")
def volume_mri_slices(size: int = 64, depth: int | None = None, acceleration: float = 4, mask: str = "gaussian-1d",
                      center_fraction: float | None = None, seed: int = 0, **kwargs) -> SliceMaskMRI:
    """DiffusionMBIR's CS-MRI volumes: ``acceleration``-fold masks of kind ``mask``, one per slice (seeded)."""
    depth = size if depth is None else depth
    return SliceMaskMRI(slice_masks(depth, size, acceleration, mask, center_fraction, seed), **kwargs)


@register("volume-ct-limited-angle", "parallel-beam CT on [0, 90) degrees on every axial slice of a (B, 1, D, N, N) volume")
def volume_ct_limited_angle(size: int = 64, depth: int | None = None, views: int = 45, max_angle: float = 90.0,
                            chunk: int = 32, **kwargs) -> Volume:
    """Limited-angle CT (``views`` angles on [0, ``max_angle``) degrees, default 45 on 0-90) per axial slice."""
    from invdiff.operators.ct import ct_limited_angle

    common = pop_common(kwargs)
    op2d = ct_limited_angle(size, views=views, max_angle=max_angle, device=common.get("device"), **kwargs)
    return Volume(op2d, depth=size if depth is None else depth, chunk=chunk, **common)
