"""2D incompressible Navier-Stokes in vorticity form on the torus, pseudo-spectral with ETDRK4.

.. math::
    \\omega_t + \\mathbf u \\cdot \\nabla \\omega = \\nu \\Delta \\omega - \\alpha\\,\\omega + f(\\mathbf x),
    \\qquad \\mathbf u = (\\partial_y \\psi, -\\partial_x \\psi), \\qquad -\\Delta \\psi = \\omega,

on :math:`[0, L_x) \\times [0, L_y)`. Arrays are indexed ``[..., i_x, i_y]`` (the last axis is
:math:`y`), grid :math:`x_i = i L_x / n_x`. The nonlinear term is evaluated in physical space
with the 2/3 rule; viscosity and the linear drag :math:`\\alpha` are integrated exactly by
ETDRK4 (Kassam & Trefethen 2005). This is the set-up of the neural-operator benchmarks (FNO,
Li et al. 2021: :math:`[0,1]^2`, :math:`\\nu = 10^{-3}`,
:math:`f = 0.1(\\sin 2\\pi(x+y) + \\cos 2\\pi(x+y))`) and of Kolmogorov flow
(:math:`f = -F k \\cos k y`, the curl of the body force :math:`(F \\sin k y, 0)`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from invdiff.operators.common import check_positive_finite, finite_number
from invdiff.utils import check_shape

from .base import PDESolver
from .spectral import ETDRK4, _last_axis_weights, dealias_mask, derivative_wavenumbers, wavenumbers


def _pair(v, name: str) -> tuple:
    v = (v, v) if isinstance(v, (int, float)) else tuple(v)
    if len(v) != 2:
        raise ValueError(f"{name}: expected a number or a pair, got {v}")
    return v


def grid_coordinates(shape: Sequence[int], lengths: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Meshgrid ``(X, Y)`` (float64, ``indexing="ij"``) of the periodic grid :math:`x_i = i L / n`."""
    xs = [torch.arange(n, dtype=torch.float64) * L / n for n, L in zip(shape, lengths)]
    return torch.meshgrid(*xs, indexing="ij")


def velocity(omega: torch.Tensor, lengths: Sequence[float] = (1.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity :math:`(u, v) = (\\partial_y\\psi, -\\partial_x\\psi)` of a periodic vorticity field.

    .. math::
        \\hat\\psi = \\hat\\omega / |k|^2 \\;(k \\ne 0), \\quad \\hat u = i k_y \\hat \\psi,
        \\quad \\hat v = -i k_x \\hat\\psi

    ``omega``: ``(..., n_x, n_y)``. The mean of :math:`\\omega` (which has no stream function) is ignored.
    """
    shape = omega.shape[-2:]
    kx, ky = derivative_wavenumbers(shape, lengths, omega.device)
    k2x, k2y = wavenumbers(shape, lengths, omega.device)
    k2 = k2x**2 + k2y**2
    inv = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    psi = torch.fft.rfft2(omega) * inv.to(omega.dtype)
    u = torch.fft.irfft2(1j * ky.to(omega.dtype) * psi, s=shape)
    v = torch.fft.irfft2(-1j * kx.to(omega.dtype) * psi, s=shape)
    return u, v


def taylor_green(shape: Sequence[int], t: float, nu: float, m: int = 1, lengths: Sequence[float] = (2 * math.pi, 2 * math.pi)) -> torch.Tensor:
    """Exact Taylor-Green vorticity on a square torus, :math:`k = 2\\pi m / L`:

    .. math::
        \\omega(t, x, y) = 2k \\cos(kx) \\cos(ky)\\, e^{-2\\nu k^2 t}

    (stream function :math:`\\cos kx \\cos ky / k \\cdot e^{-2\\nu k^2 t}`; the nonlinear term vanishes).
    Returns float64 ``(n_x, n_y)``.
    """
    if lengths[0] != lengths[1]:
        raise ValueError(f"taylor_green: expected a square domain, got lengths {tuple(lengths)}")
    k = 2 * math.pi * m / lengths[0]
    X, Y = grid_coordinates(shape, lengths)
    return 2 * k * torch.cos(k * X) * torch.cos(k * Y) * math.exp(-2 * nu * k * k * t)


def forcing_field(kind: str | torch.Tensor | None, shape: Sequence[int], lengths: Sequence[float],
                  amplitude: float = 1.0, wavenumber: int = 4) -> torch.Tensor | None:
    """A named vorticity forcing on the grid (float64 ``(n_x, n_y)``), or a given tensor, or ``None``.

    * ``"fno"``: :math:`f = 0.1\\,(\\sin 2\\pi(x + y) + \\cos 2\\pi(x + y))` (``lengths`` = 1, Li et al. 2021);
      ``amplitude`` multiplies the 0.1.
    * ``"kolmogorov"``: :math:`f = -F k \\cos(k y)`, :math:`k = 2\\pi\\,\\text{wavenumber}/L_y`,
      :math:`F` = ``amplitude``: the vorticity of the body force :math:`(F \\sin k y, 0)`.
    """
    if kind is None or isinstance(kind, torch.Tensor):
        if kind is not None:
            check_shape("forcing", kind, tuple(shape))
        return kind
    X, Y = grid_coordinates(shape, lengths)
    if kind == "fno":
        return 0.1 * amplitude * (torch.sin(2 * math.pi * (X + Y)) + torch.cos(2 * math.pi * (X + Y)))
    if kind == "kolmogorov":
        k = 2 * math.pi * wavenumber / lengths[1]
        return -amplitude * k * torch.cos(k * Y)
    raise ValueError(f"forcing: expected 'fno', 'kolmogorov', None or a tensor of shape {tuple(shape)}, got {kind!r}")


class _VorticityNonlinear:
    r""":math:`N(\hat\omega) = -P\,\mathrm{rfft2}(u\,\omega_x + v\,\omega_y) + \hat f` and its adjoint.

    With :math:`u, v, \omega_x, \omega_y` the inverse transforms of :math:`D_j \hat\omega` for the
    diagonal multipliers :math:`D = (i k_y/|k|^2, -i k_x/|k|^2, i k_x, i k_y)`, the adjoint is
    :math:`\bar{\hat\omega} = \sum_j \bar D_j\, \mathrm{irfft2}^*(\bar q\, \partial q/\partial(\cdot)_j)`,
    :math:`\bar q = \mathrm{rfft2}^*(-P \bar N)`; the four fields are kept from the forward pass.
    """

    def __init__(self, tb: dict, grid: tuple[int, int]):
        self.tb, self.grid = tb, grid
        mask = tb["mask"]
        w = _last_axis_weights(grid[-1], mask.shape[-1], mask.device, tb["inv"].real.dtype)
        n = grid[0] * grid[1]
        self.rfft_adj = -(mask * (n / w)).to(tb["inv"].dtype)  # -P, then rfft2^* = n irfft2(. / w)
        s = w / n  # irfft2^* = w rfft2(.) / n, folded into the conjugate multipliers
        ikx, iky, inv = tb["ikx"].conj(), tb["iky"].conj(), tb["inv"].conj()
        self.adj = (iky * inv * s, -ikx * inv * s, ikx * s, iky * s)

    def forward(self, w):
        tb, s = self.tb, self.grid
        psi = w * tb["inv"]
        u = torch.fft.irfft2(tb["iky"] * psi, s=s)
        v = torch.fft.irfft2(-tb["ikx"] * psi, s=s)
        wx = torch.fft.irfft2(tb["ikx"] * w, s=s)
        wy = torch.fft.irfft2(tb["iky"] * w, s=s)
        out = -torch.fft.rfft2(u * wx + v * wy) * tb["mask"]
        return (out if tb["f_hat"] is None else out + tb["f_hat"]), (u, v, wx, wy)

    def vjp(self, saved, Nbar):
        u, v, wx, wy = saved
        qbar = torch.fft.irfft2(self.rfft_adj * Nbar, s=self.grid)
        a, b, c, d = self.adj
        return (a * torch.fft.rfft2(qbar * wx) + b * torch.fft.rfft2(qbar * wy)
                + c * torch.fft.rfft2(qbar * u) + d * torch.fft.rfft2(qbar * v))


class NavierStokes2D(PDESolver):
    """2D Navier-Stokes (vorticity) on the torus: initial vorticity -> vorticity trajectory.

    Fourier form, with :math:`P` the 2/3 mask:

    .. math::
        \\hat\\omega_t = -(\\nu |k|^2 + \\alpha)\\,\\hat\\omega
            - P\\,\\mathcal F\\big[u\\,\\partial_x\\omega + v\\,\\partial_y\\omega\\big] + \\hat f.

    :param n: grid, an int (square) or ``(n_x, n_y)``.
    :param nu: viscosity :math:`\\nu \\ge 0` (0: Euler, energy and enstrophy conserving); ``drag``: linear damping :math:`\\alpha \\ge 0`.
    :param length: domain size (int/float or pair).
    :param forcing: ``"fno"``, ``"kolmogorov"``, ``None`` or an ``(n_x, n_y)`` tensor (see :func:`forcing_field`).
    :param dt_max: largest ETDRK4 step. The default ``0.5 * h / u_max`` keeps the advective CFL
        number below 0.5 for speeds up to ``u_max``.

    >>> solver = NavierStokes2D(n=16, nu=0.1, length=2 * math.pi, forcing=None, t_final=1.0, n_frames=2)
    >>> w0 = taylor_green((16, 16), 0.0, 0.1).reshape(1, 1, 16, 16)
    >>> (solver(w0)[0, 0, -1] - taylor_green((16, 16), 1.0, 0.1)).abs().max() < 1e-10
    tensor(True)
    """

    def __init__(self, n: int | Sequence[int] = 64, nu: float = 1e-3, length: float | Sequence[float] = 1.0,
                 forcing: str | torch.Tensor | None = "fno", forcing_amplitude: float = 1.0,
                 forcing_wavenumber: int = 4, drag: float = 0.0, t_final: float = 10.0, n_frames: int = 11,
                 u_max: float = 2.0, dt_max: float | None = None, output: str = "trajectory", progress: bool = False):
        shape = tuple(int(v) for v in _pair(n, "n"))
        lengths = tuple(float(v) for v in _pair(length, "length"))
        check_positive_finite("nu", nu, allow_zero=True)
        check_positive_finite("drag", drag, allow_zero=True)
        check_positive_finite("u_max", u_max)
        finite_number("forcing_amplitude", forcing_amplitude)
        finite_number("forcing_wavenumber", forcing_wavenumber)
        for v in lengths:
            check_positive_finite("length", v)
        h = min(L / m for L, m in zip(lengths, shape))
        cfl = 0.5 * h / u_max
        dt_max = cfl if dt_max is None else dt_max
        super().__init__(shape, t_final, n_frames, dt_max, output, progress)
        self.nu, self.drag, self.lengths = float(nu), float(drag), lengths
        self.forcing = forcing_field(forcing, shape, lengths, forcing_amplitude, forcing_wavenumber)
        self.forcing_name = forcing if isinstance(forcing, str) else ("tensor" if forcing is not None else "none")

    def _prepare(self, dt, dtype, device):
        kx, ky = wavenumbers(self.grid, self.lengths, device)
        dkx, dky = derivative_wavenumbers(self.grid, self.lengths, device)
        k2 = kx**2 + ky**2
        stepper = ETDRK4(-(self.nu * k2 + self.drag), dt, dtype=dtype)
        cdt = stepper.E.dtype
        inv = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        f_hat = None
        if self.forcing is not None:
            f_hat = torch.fft.rfft2(self.forcing.to(device=device, dtype=torch.float64)).to(cdt)
        tb = dict(stepper=stepper, ikx=(1j * dkx).to(cdt), iky=(1j * dky).to(cdt), inv=inv.to(cdt),
                  mask=dealias_mask(self.grid, device), f_hat=f_hat)
        tb["nonlinear"] = _VorticityNonlinear(tb, self.grid)
        return tb

    def _begin(self, w0, tb):
        return torch.fft.rfft2(w0)

    def _step(self, w, t, tb):
        return tb["stepper"].step(w, tb["nonlinear"])

    def _field(self, w, tb):
        return torch.fft.irfft2(w, s=self.grid)
