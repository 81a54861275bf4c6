r"""Spatially invariant blur with circular, reflect or valid boundaries, computed by FFT.

Kernels come from deepinv (``gaussian_blur``, ``MotionBlurGenerator``: random Matérn-GP camera
trajectories, Schuler et al. 2015) or are a uniform box; the operator subclasses deepinv's
``Blur`` (same kernel-centre convention and boundary names). What this module adds:

- every boundary through one real FFT of the (padded) image, so the cost is that of the FFT:

  .. math::
      A = C\, \mathcal F^{-1} \operatorname{diag}(\hat k)\, \mathcal F\, P, \qquad
      A^\top = P^\top \mathcal F^{-1} \operatorname{diag}(\bar{\hat k})\, \mathcal F\, C^\top

  with :math:`P` the reflect padding (identity otherwise) and :math:`C` the crop to the output
  (the valid part for ``"valid"``); :math:`P^\top` is PyTorch's exact reflection-pad backward;
- a Wiener (Tikhonov) deconvolution baseline: closed form in Fourier for circular boundaries,
  CG on the normal equations otherwise;
- for circular boundaries, deepinv's decomposable interface as its ``BlurFFT`` has it
  (``mask`` :math:`= |\hat k|`, ``V^T`` = orthonormal ``rfft2``, ``U^T`` = ``rfft2`` times the
  conjugate phase of :math:`\hat k`), so deepinv's DDRM runs on it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from deepinv.physics import Blur as _DeepinvBlur
from deepinv.physics.noise import NoiseModel

from invdiff.operators.base import OperatorMixin, tikhonov_cg
from invdiff.operators.common import finite_number, resolve_common
from invdiff.operators.complex import to_channels, to_complex
from invdiff.operators.registry import register
from invdiff.utils.checks import check_floating

PADDINGS = ("circular", "reflect", "valid")


def uniform_kernel(size: int) -> torch.Tensor:
    """A ``(size, size)`` box kernel of ones / size**2."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected an int >= 1, got {size!r}")
    return torch.full((size, size), 1.0 / size**2)


def gaussian_kernel(blur_sigma: float, size: int | None = None) -> torch.Tensor:
    r"""Isotropic Gaussian kernel :math:`k \propto e^{-|p|^2 / 2\sigma^2}` (deepinv's ``gaussian_blur``), sum 1."""
    from deepinv.physics.functional.blur import gaussian_blur

    finite_number("blur_sigma", blur_sigma, low=0)
    if size is not None:
        finite_number("kernel_size", size, low=1, low_inclusive=True, integer=True)
    k = gaussian_blur(psf_size=None if size is None else (size, size), sigma=(blur_sigma, blur_sigma))
    return (k / k.sum()).reshape(k.shape[-2:])


def motion_kernel(size: int = 11, l: float = 0.3, sigma: float = 0.25, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random motion-blur kernel (deepinv's ``MotionBlurGenerator``: Matérn-3/2 GP trajectory), sum 1."""
    from deepinv.physics.generator import MotionBlurGenerator

    finite_number("kernel_size", size, low=1, low_inclusive=True, integer=True)
    finite_number("l", l, low=0)  # the trajectory's length scale: l <= 0 gives an all-NaN kernel
    finite_number("sigma", sigma, low=0)
    gen = MotionBlurGenerator((size, size), rng=generator, l=l, sigma=sigma, device=generator.device if generator else "cpu")
    k = gen.step(batch_size=1)["filter"][0, 0].cpu()
    if not (bool(torch.isfinite(k).all()) and float(k.sum()) > 0):
        raise ValueError(f"motion kernel: deepinv's generator gave a non-finite or zero kernel for size={size}, l={l}, sigma={sigma}")
    return k / k.sum()


class Blur2D(OperatorMixin, _DeepinvBlur):
    r"""Convolution :math:`y = C(k * P x)` of ``(B, C, H, W)`` images with a ``(kh, kw)`` kernel.

    :param kernel: ``(kh, kw)`` real kernel; its centre is ``(kh // 2, kw // 2)`` (odd sizes),
        as in deepinv and ``scipy.ndimage.convolve``.
    :param size: image side (int) or ``(H, W)``.
    :param channels: image channels (the kernel is applied to each).
    :param padding: ``"circular"`` (periodic), ``"reflect"`` (mirror without repeating the edge,
        output ``(H, W)``) or ``"valid"`` (output ``(H - kh + 1, W - kw + 1)``).
    :param sigma, gain, noise_model, generator, device, dtype: the common arguments
        (:mod:`invdiff.operators.common`).

    >>> op = Blur2D(uniform_kernel(3), size=8)
    >>> x = torch.zeros(1, 1, 8, 8); x[0, 0, 4, 4] = 9.0
    >>> op.A(x)[0, 0, 3:6, 3:6]
    tensor([[1., 1., 1.],
            [1., 1., 1.],
            [1., 1., 1.]])
    """

    def __init__(
        self,
        kernel: torch.Tensor,
        size: int | tuple[int, int] = 64,
        channels: int = 1,
        padding: str = "circular",
        sigma: float | None = None,
        gain: float | None = None,
        noise_model: NoiseModel | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        check_floating("kernel", kernel)
        if kernel.ndim != 2 or kernel.numel() == 0:
            raise ValueError(f"kernel: expected shape (kh, kw), got {tuple(kernel.shape)}")
        if not bool(torch.isfinite(kernel).all()):
            raise ValueError("kernel: expected finite values, got NaN/inf")
        if padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
        finite_number("channels", channels, low=1, low_inclusive=True, integer=True)
        H, W = (size, size) if isinstance(size, int) else tuple(size)
        for n in (H, W):
            finite_number("size", n, low=1, low_inclusive=True, integer=True)
        common = resolve_common(sigma, gain, noise_model, generator, device, dtype)
        device = common.device
        kh, kw = kernel.shape
        if kh > H or kw > W:
            raise ValueError(f"kernel {kh}x{kw} larger than the image {H}x{W}")
        if padding == "reflect" and (kh // 2 >= H or kw // 2 >= W):
            raise ValueError("reflect padding needs kernel half-width < image size")
        super().__init__(filter=kernel[None, None].to(device), padding=padding, noise_model=common.noise_model, device=device)
        self.H, self.W, self.channels = H, W, channels
        ph, pw = kh // 2, kw // 2
        # reflect: pad (ph, kh - 1 - ph) so the full conv of the padded image, cropped, is (H, W)
        self._pad4 = (pw, kw - 1 - pw, ph, kh - 1 - ph) if padding == "reflect" else None
        Hp, Wp = (H + kh - 1, W + kw - 1) if padding == "reflect" else (H, W)
        self.fft_shape = (Hp, Wp)
        # transfer function of the kernel with its centre moved to the origin
        kpad = torch.zeros(Hp, Wp, dtype=torch.float64)
        kpad[:kh, :kw] = kernel.to(torch.float64).cpu()
        kpad = torch.roll(kpad, shifts=(-ph, -pw), dims=(0, 1))
        khat = torch.fft.rfft2(kpad)
        self.register_buffer("khat", khat.to(torch.complex64).to(device))
        self.register_buffer("khat64", khat.to(device), persistent=False)
        self.register_buffer("khat_conj", khat.conj().resolve_conj().to(torch.complex64).to(device), persistent=False)
        self.register_buffer("khat64_conj", khat.conj().resolve_conj().to(device), persistent=False)
        self.register_buffer("khat_abs", khat.abs().to(torch.float32).to(device), persistent=False)  # follows dtype=
        if padding == "valid":
            self._crop = (kh - 1 - ph, kh - 1 - ph + H - kh + 1, kw - 1 - pw, kw - 1 - pw + W - kw + 1)
            self.y_shape = (channels, H - kh + 1, W - kw + 1)
        else:
            self._crop = (ph, ph + H, pw, pw + W) if padding == "reflect" else None
            self.y_shape = (channels, H, W)
        self.x_shape = (channels, H, W)
        common.finish(self)

    def _khat(self, t: torch.Tensor, conj: bool = False) -> torch.Tensor:
        if t.dtype == torch.float64:
            return self.khat64_conj if conj else self.khat64
        return self.khat_conj if conj else self.khat

    def _conv(self, z: torch.Tensor, adjoint: bool) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(z).mul_(self._khat(z, conj=adjoint)), s=self.fft_shape)

    # -- deepinv's decomposable interface (circular boundaries only), as deepinv's BlurFFT --
    def _circular(self) -> None:
        if self.padding != "circular":
            # AttributeError: hasattr(op, "mask") is False and OperatorMixin names the reason
            raise AttributeError(f"Blur2D with padding={self.padding!r} is not diagonalised by the FFT")

    @property
    def mask(self) -> torch.Tensor:
        r"""Singular values :math:`|\hat k|` on the ``rfft2`` grid, shape ``(1, C, H, W // 2 + 1, 2)``
        (the same for the real and imaginary coordinates), circular boundaries only."""
        self._circular()
        m = self.khat64.abs().to(self.khat_abs.dtype)  # precision of khat64, dtype of the real buffers
        return m[None, None, :, :, None].expand(1, self.channels, *m.shape, 2)

    def V_adjoint(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`V^\top x`: the orthonormal ``rfft2`` of ``x`` as (real, imag) on a last axis."""
        self._circular()
        return to_channels(torch.fft.rfft2(x, norm="ortho"), dim=-1)

    def V(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`V \bar x`: the inverse of :meth:`V_adjoint` (``irfft2``)."""
        self._circular()
        return torch.fft.irfft2(to_complex(z, dim=-1), norm="ortho", s=self.fft_shape)

    def U_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`U^\top y`: ``rfft2`` times the conjugate phase :math:`\bar{\hat k} / |\hat k|`."""
        self._circular()
        return to_channels(torch.fft.rfft2(y, norm="ortho") * self._phase(y, conj=True), dim=-1)

    def U(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`U \bar y`: the phase :math:`\hat k / |\hat k|` then ``irfft2``, so that
        ``U(mask * V_adjoint(x)) = A x`` exactly."""
        self._circular()
        return torch.fft.irfft2(to_complex(z, dim=-1) * self._phase(z), norm="ortho", s=self.fft_shape)

    def _phase(self, t: torch.Tensor, conj: bool = False) -> torch.Tensor:
        k = self._khat(t, conj=conj)
        mag = k.abs()
        return torch.where(mag > 0, k / torch.where(mag > 0, mag, torch.ones_like(mag)), torch.ones_like(k))

    def update_parameters(self, filter=None, **kwargs):
        """deepinv's parameter update; the kernel is folded into its transfer function at
        construction, so changing it raises (build a new operator instead)."""
        if filter is not None:
            raise NotImplementedError("Blur2D: the kernel is fixed at construction; build a new operator")
        super().update_parameters(**kwargs)

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`y = C(k * P x)`."""
        self.check_x(x)
        if kwargs.get("filter") is not None:
            self.update_parameters(filter=kwargs["filter"])
        z = F.pad(x, self._pad4, mode="reflect") if self._pad4 else x
        z = self._conv(z, adjoint=False)
        if self._crop:
            a, b, c, d = self._crop
            z = z[..., a:b, c:d]
        return z

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r""":math:`A^\top y = P^\top (\tilde k \star C^\top y)` (correlation with the kernel)."""
        self.check_y(y)
        if kwargs.get("filter") is not None:
            self.update_parameters(filter=kwargs["filter"])
        if self._crop:
            a, b, c, d = self._crop
            Hp, Wp = self.fft_shape
            y = F.pad(y, (c, Wp - d, a, Hp - b))
        z = self._conv(y, adjoint=True)
        if self._pad4:
            z = _ReflectPadT.apply(z, self._pad4, (self.H, self.W))
        return z

    def wiener(self, y: torch.Tensor, lam: float | None = None, max_iter: int = 50, tol: float = 1e-6) -> torch.Tensor:
        r"""Wiener / Tikhonov deconvolution :math:`\arg\min_x \|Ax - y\|^2 + \lambda\|x\|^2`:

        .. math::
            \hat x = \mathcal F^{-1}\Bigl[\frac{\bar{\hat k}\, \hat y}{|\hat k|^2 + \lambda}\Bigr]
            \quad \text{(circular; CG on the normal equations for other boundaries)}.

        Default :math:`\lambda = \max(10^{-3}, \sigma_y^2 / 0.1)`: a white signal prior of
        variance 0.1 per pixel (images in [0, 1]) and the Gaussian noise level of the operator.
        """
        self.check_y(y)
        if lam is None:
            s = getattr(self.noise_model, "sigma", None)
            s2 = float(torch.as_tensor(s).max()) ** 2 if s is not None else 0.0
            lam = max(1e-3, s2 / 0.1)
        if self.padding != "circular":
            return tikhonov_cg(self, y, lam, max_iter=max_iter, tol=tol)
        kh = self._khat(y)
        return torch.fft.irfft2(torch.fft.rfft2(y) * self._khat(y, conj=True) / (kh.abs() ** 2 + lam), s=self.fft_shape)

    def baseline(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        r"""Wiener deconvolution (:meth:`wiener`)."""
        return self.wiener(y, **kwargs)


class _ReflectPadT(torch.autograd.Function):
    """The transpose of reflect padding (PyTorch's exact ``reflection_pad2d_backward``); its
    backward is the reflect padding itself."""

    @staticmethod
    def forward(ctx, z, pad4, hw):
        ctx.pad4 = pad4
        shape = (*z.shape[:-2], *hw)
        return torch.ops.aten.reflection_pad2d_backward(z, z.new_zeros(()).expand(shape), list(pad4))

    @staticmethod
    def backward(ctx, g):
        return F.pad(g, ctx.pad4, mode="reflect"), None, None


@register("blur-gaussian", "Gaussian blur (blur_sigma=2 px), circular/reflect/valid boundary, Wiener baseline")
def blur_gaussian(size: int = 64, blur_sigma: float = 2.0, kernel_size: int | None = None, **kwargs) -> Blur2D:
    """Gaussian blur of width ``blur_sigma`` pixels (``sigma`` is the noise level)."""
    return Blur2D(gaussian_kernel(blur_sigma, kernel_size), size=size, **kwargs)


@register("blur-motion", "random motion blur (Matern GP trajectory, seeded), Wiener baseline")
def blur_motion(size: int = 64, kernel_size: int = 11, l: float = 0.3, seed: int = 0, **kwargs) -> Blur2D:
    """Motion blur with a ``kernel_size`` kernel drawn from ``seed`` (``l > 0``: the length scale
    of the camera trajectory)."""
    finite_number("seed", seed, low=0, low_inclusive=True, integer=True)
    return Blur2D(motion_kernel(kernel_size, l=l, generator=torch.Generator().manual_seed(seed)), size=size, **kwargs)


@register("blur-uniform", "uniform (box) blur, Wiener baseline")
def blur_uniform(size: int = 64, kernel_size: int = 7, **kwargs) -> Blur2D:
    """Box blur of ``kernel_size`` x ``kernel_size`` pixels."""
    return Blur2D(uniform_kernel(kernel_size), size=size, **kwargs)
