"""Cartesian MRI, single- and multi-coil, on deepinv's ``MRI`` / ``MultiCoilMRI``.

Complex images are two real channels ``(B, 2, H, W)`` (real, imaginary), k-space is centred
and the Fourier transform orthonormal, exactly as deepinv's operators (which these subclass,
so deepinv's algorithms, ``A_dagger`` and noise handling apply). What this module adds:

- a faster ``A`` / ``A_adjoint``: for even sizes the centring shifts are folded into the data as
  the checkerboard :math:`(-1)^{h+w}`, which costs one elementwise product instead of two
  ``fftshift`` copies (see :func:`centred_fft2`); shape and dtype checks on every call;
- simulated birdcage coil sensitivities (no sigpy needed), normalised so that
  :math:`\\sum_c |S_c|^2 = 1`, which makes the fully sampled multi-coil operator an isometry;
- masks with an ``acceleration`` (:mod:`invdiff.operators.masks`);
- baselines: zero-filled (the exact pseudo-inverse for one coil) and SENSE by CG.
"""
from __future__ import annotations

import math

import torch
from deepinv.physics import MRI as _DeepinvMRI
from deepinv.physics import MultiCoilMRI as _DeepinvMultiCoilMRI
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin, tikhonov_cg
from invdiff.operators.common import finite_number, resolve_common
from invdiff.operators.complex import to_channels, to_complex
from invdiff.operators.masks import cartesian_mask
from invdiff.operators.registry import register
from invdiff.utils.checks import check_floating


def _phases(H: int, W: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""For even ``H, W``: ``c_in = (-1)^{h+w}`` and ``c_out = (-1)^{H/2 + W/2} c_in`` with
    ``fftshift(fft2(ifftshift(x))) = c_out * fft2(c_in * x)``; ``(None, None)`` otherwise."""
    if H % 2 or W % 2:
        return None, None
    h = torch.arange(H)[:, None]
    w = torch.arange(W)[None, :]
    c_in = (1 - 2 * ((h + w) % 2)).to(torch.float32)
    return c_in, c_in * (-1) ** ((H // 2 + W // 2) % 2)


def centred_fft2(z: torch.Tensor, c_in: torch.Tensor | None, inverse: bool = False) -> torch.Tensor:
    r"""Centred orthonormal 2D (inverse) FFT over the last two axes of complex ``z``:

    .. math::
        \mathcal F_c z = \mathrm{fftshift}(\mathrm{fft2}(\mathrm{ifftshift}(z)))
        = s\, c \odot \mathrm{fft2}(c \odot z), \quad c_{hw} = (-1)^{h+w},\ s = (-1)^{H/2+W/2}

    When ``c_in`` is given the caller has already multiplied ``z`` by ``c_in`` and will multiply
    the result by ``c_out`` (both folded into masks or coil maps); otherwise the shifts are done.
    """
    f = torch.fft.ifft2 if inverse else torch.fft.fft2
    if c_in is not None:
        return f(z, norm="ortho")
    return torch.fft.fftshift(f(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


class _ComplexConstants:
    """Masks / phases as complex tensors of the input's precision (complex x complex products
    are faster than the mixed real x complex ones, which convert on every call)."""

    def _c(self, name: str, t: torch.Tensor) -> torch.Tensor | None:
        base = getattr(self, name)
        if base is None:
            return None
        want = torch.complex128 if t.dtype == torch.float64 else torch.complex64
        cache = self.__dict__.setdefault("_complex_cache", {})
        key = (name, want, t.device)
        c = cache.get(key)
        if c is None or c.device != t.device:
            c = base.to(device=t.device, dtype=want)
            cache[key] = c
        return c

    def update_parameters(self, mask=None, coil_maps=None, **kwargs):
        """deepinv's parameter update; the mask and coil maps are folded into precomputed
        buffers at construction, so changing them raises (build a new operator instead)."""
        if mask is not None or coil_maps is not None:
            raise NotImplementedError(
                f"{type(self).__name__}: mask and coil_maps are fixed at construction; build a new operator"
            )
        super().update_parameters(**kwargs)

    def _no_update(self, kwargs: dict) -> None:
        if kwargs.get("mask") is not None or kwargs.get("coil_maps") is not None:
            self.update_parameters(mask=kwargs.get("mask"), coil_maps=kwargs.get("coil_maps"))


def _check_mask(mask: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise ValueError(f"mask: expected shape (H, W), got {tuple(mask.shape)}")
    if shape is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask: expected 0/1 values")
    if not bool(mask.any()):
        raise ValueError("mask: empty (no k-space sample); expected at least one 1")
    return mask.to(torch.float32)


def birdcage_maps(n_coils: int, shape: tuple[int, int], radius: float = 1.5, dtype=torch.complex64) -> torch.Tensor:
    r"""Simulated birdcage coil sensitivities ``(n_coils, H, W)``, normalised to :math:`\sum_c |S_c|^2 = 1`.

    Coil :math:`c` sits at angle :math:`\phi_c = 2\pi c / n` on a circle of ``radius`` (in
    half-image units) and has the smooth map of sigpy's ``birdcage_maps``:

    .. math::
        \tilde S_c(p) = \frac{e^{i(\arg(p - q_c) + \phi_c)}}{|p - q_c|}, \qquad
        S_c = \tilde S_c \big/ \sqrt{\textstyle\sum_{c'} |\tilde S_{c'}|^2}.

    >>> S = birdcage_maps(4, (16, 16))
    >>> torch.allclose((S.abs() ** 2).sum(0), torch.ones(16, 16))
    True
    """
    if not isinstance(n_coils, int) or n_coils < 1:
        raise ValueError(f"n_coils: expected an int >= 1, got {n_coils!r}")
    H, W = shape
    y = (torch.arange(H, dtype=torch.float64) - H / 2) / (H / 2)
    x = (torch.arange(W, dtype=torch.float64) - W / 2) / (W / 2)
    phi = 2 * math.pi * torch.arange(n_coils, dtype=torch.float64) / n_coils
    dx = x[None, None, :] - radius * torch.cos(phi)[:, None, None]
    dy = y[None, :, None] - radius * torch.sin(phi)[:, None, None]
    r = torch.sqrt(dx**2 + dy**2)
    ang = torch.atan2(dx, -dy) + phi[:, None, None]
    S = torch.polar(1.0 / r, ang)
    S = S / torch.sqrt((S.abs() ** 2).sum(0, keepdim=True))
    return S.to(dtype)


class SingleCoilMRI(_ComplexConstants, OperatorMixin, _DeepinvMRI):
    r"""Single-coil Cartesian MRI :math:`y = M \mathcal F_c x` on ``(B, 2, H, W)`` images.

    .. math::
        A = M \mathcal F_c, \qquad A^\top = \mathcal F_c^{H} M, \qquad A^\dagger = A^\top

    (orthonormal centred FFT :math:`\mathcal F_c`, binary mask :math:`M`; so :math:`\|A\| = 1`
    and the zero-filled reconstruction is the exact pseudo-inverse). It is deepinv's
    ``DecomposablePhysics`` with :math:`U = I`, :math:`V^\top = \mathcal F_c` and the singular
    values ``mask``, so deepinv's DDRM runs on it. Common arguments (``sigma``, ``noise_model``,
    ``generator``, ``device``, ``dtype``): :mod:`invdiff.operators.common` (``gain`` is rejected:
    k-space is complex).

    >>> op = SingleCoilMRI(torch.ones(8, 8))
    >>> x = torch.randn(2, 2, 8, 8)
    >>> torch.allclose(op.A_adjoint(op.A(x)), x, atol=1e-6)
    True
    """

    supports_poisson = False

    def __init__(
        self,
        mask: torch.Tensor,
        sigma: float | None = None,
        gain: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype, poisson=False)
        device = common.device
        mask = _check_mask(mask).to(device)
        super().__init__(mask=mask, noise_model=common.noise_model, device=device)
        H, W = mask.shape
        c_in, c_out = _phases(H, W)
        self.register_buffer("c_in", c_in.to(device) if c_in is not None else None)
        self.register_buffer("mask_out", mask * c_out.to(device) if c_out is not None else mask.clone())
        self.x_shape = (2, H, W)
        self.y_shape = (2, H, W)
        common.finish(self)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y = M \mathcal F_c x`, shape ``(B, 2, H, W)``."""
        self.check_x(x)
        self._no_update(kwargs)
        z = to_complex(x)
        if self.c_in is not None:
            z.mul_(self._c("c_in", x))
        k = centred_fft2(z, self.c_in)
        return to_channels(k.mul_(self._c("mask_out", x)))

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`x = \mathcal F_c^H M y` (zero-filled inverse FFT)."""
        self.check_y(y)
        self._no_update(kwargs)
        z = centred_fft2(to_complex(y).mul_(self._c("mask_out", y)), self.c_in, inverse=True)
        if self.c_in is not None:
            z.mul_(self._c("c_in", y))
        return to_channels(z)

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""The pseudo-inverse, which for a binary mask is the zero-filled :math:`A^\top y`."""
        return self.A_adjoint(y)

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Zero-filled reconstruction :math:`\mathcal F_c^H M y` (exact pseudo-inverse)."""
        return self.A_adjoint(y)


class MultiCoilMRI(_ComplexConstants, OperatorMixin, _DeepinvMultiCoilMRI):
    r"""Multi-coil Cartesian MRI :math:`y_c = M \mathcal F_c (S_c x)`, ``y`` of shape ``(B, 2, n_coils, H, W)``.

    .. math::
        A^\top y = \sum_c \bar S_c \odot \mathcal F_c^H (M y_c), \qquad
        \hat x_{SENSE} = \arg\min_x \|A x - y\|^2 + \lambda \|x\|^2

    (Pruessmann et al. 1999). With :math:`\sum_c |S_c|^2 = 1`, :math:`\|A\| \le 1` with equality
    for a full mask.

    :param mask: ``(H, W)`` binary mask.
    :param coil_maps: ``(n_coils, H, W)`` complex maps, or an int: that many birdcage maps.
    :param sigma, gain, noise_model, generator, device, dtype: see :mod:`invdiff.operators.common`
        (``gain`` is rejected: k-space is complex).
    """

    supports_poisson = False

    def __init__(
        self,
        mask: torch.Tensor,
        coil_maps: torch.Tensor | int = 8,
        sigma: float | None = None,
        gain: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype, poisson=False)
        device = common.device
        mask = _check_mask(mask).to(device)
        H, W = mask.shape
        if isinstance(coil_maps, int):
            coil_maps = birdcage_maps(coil_maps, (H, W))
        if not isinstance(coil_maps, torch.Tensor) or not coil_maps.is_complex() or coil_maps.ndim != 3:
            raise ValueError("coil_maps: expected a complex tensor of shape (n_coils, H, W) or an int")
        if tuple(coil_maps.shape[1:]) != (H, W):
            raise ValueError(f"coil_maps: expected shape (n_coils, {H}, {W}), got {tuple(coil_maps.shape)}")
        coil_maps = coil_maps.to(device)
        super().__init__(mask=mask, coil_maps=coil_maps, img_size=(H, W), noise_model=common.noise_model, device=device)
        c_in, c_out = _phases(H, W)
        self.register_buffer("c_in", c_in.to(device) if c_in is not None else None)
        self.register_buffer("maps_in", coil_maps * c_in.to(device) if c_in is not None else coil_maps.clone())
        self.register_buffer("maps_conj", self.maps_in.conj().resolve_conj(), persistent=False)
        self.register_buffer("mask_out", mask * c_out.to(device) if c_out is not None else mask.clone())
        self.n_coils = coil_maps.shape[0]
        self.x_shape = (2, H, W)
        self.y_shape = (2, self.n_coils, H, W)
        common.finish(self)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y_c = M \mathcal F_c (S_c x)`, shape ``(B, 2, n_coils, H, W)``."""
        self.check_x(x)
        self._no_update(kwargs)
        z = self._c("maps_in", x) * to_complex(x)[:, None]
        return to_channels(centred_fft2(z, self.c_in).mul_(self._c("mask_out", x)))

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`A^\top y = \sum_c \bar S_c \odot \mathcal F_c^H (M y_c)`, shape ``(B, 2, H, W)``."""
        self.check_y(y)
        self._no_update(kwargs)
        z = centred_fft2(to_complex(y).mul_(self._c("mask_out", y)), self.c_in, inverse=True)
        return to_channels((self._c("maps_conj", y) * z).sum(1))

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        r"""Coil-combined zero-filled image :math:`A^\top y` (optimal coil combination, as :math:`\sum |S|^2 = 1`)."""
        return self.A_adjoint(y)

    def sense(self, y: torch.Tensor, lam: float = 1e-3, max_iter: int = 30) -> torch.Tensor:
        r"""SENSE reconstruction: CG on :math:`(A^\top A + \lambda I) x = A^\top y`."""
        return tikhonov_cg(self, y, lam, max_iter=max_iter)

    def A_dagger(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Least squares by CG (SENSE with a tiny :math:`\lambda = 10^{-6}`)."""
        return self.sense(y, lam=1e-6, max_iter=kwargs.get("max_iter", 50))

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""SENSE reconstruction (:meth:`sense`, :math:`\lambda = 10^{-3}`, 30 CG iterations)."""
        return self.sense(y, **kwargs)


def _mask(size, acceleration, mask, center_fraction, seed):
    if isinstance(mask, torch.Tensor):
        return mask
    finite_number("size", size, low=2, low_inclusive=True, integer=True)
    finite_number("acceleration", acceleration, low=1, low_inclusive=True)
    finite_number("seed", seed, low=0, low_inclusive=True, integer=True)
    return cartesian_mask((size, size), acceleration, center_fraction, kind=mask, generator=torch.Generator().manual_seed(seed))


@register("mri-4x", "single-coil Cartesian MRI, 4x variable-density 1D lines, fully sampled centre")
def mri_4x(
    size: int = 64, acceleration: float = 4, mask: str | torch.Tensor = "gaussian-1d",
    center_fraction: float | None = None, seed: int = 0, **kwargs,
) -> SingleCoilMRI:
    """Single-coil MRI with a ``mask`` kind of :func:`~invdiff.operators.masks.cartesian_mask` (seeded)."""
    return SingleCoilMRI(_mask(size, acceleration, mask, center_fraction, seed), **kwargs)


@register("mri-multicoil-8x", "8-coil Cartesian MRI (birdcage maps), 8x 2D variable-density mask, SENSE baseline")
def mri_multicoil_8x(
    size: int = 64, coils: int = 8, acceleration: float = 8, mask: str | torch.Tensor = "gaussian-2d",
    center_fraction: float | None = None, seed: int = 0, **kwargs,
) -> MultiCoilMRI:
    """Multi-coil MRI with ``coils`` birdcage maps and a seeded ``mask`` (default 2D Gaussian, 8x)."""
    return MultiCoilMRI(_mask(size, acceleration, mask, center_fraction, seed), coil_maps=coils, **kwargs)
