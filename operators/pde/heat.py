"""Linear advection-diffusion (heat) on the 1D/2D torus, solved exactly in Fourier space.

.. math::
    u_t + \\mathbf c \\cdot \\nabla u = \\kappa \\Delta u
    \\quad\\Longrightarrow\\quad
    \\hat u(t, k) = e^{(-\\kappa |k|^2 - i\\,\\mathbf c \\cdot k)\\,t}\\, \\hat u(0, k).

The map :math:`u_0 \\mapsto (u(t_0), \\dots, u(t_{K-1}))` is linear; its adjoint uses the conjugate
multipliers, :math:`A^\\top y = \\sum_j \\mathcal F^{-1}[\\overline{m_j}\\,\\mathcal F y_j]`, exact to
round-off. The Nyquist wavenumber of the advection term is set to 0 on even grids (it has no
sign), which keeps the multiplier Hermitian and the operator real.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from deepinv.physics import LinearPhysics

from invdiff.operators.common import LinearFlag, check_positive_finite, finite_number
from invdiff.utils import check_floating, check_shape

from .spectral import derivative_wavenumbers, wavenumbers


class AdvectionDiffusion(LinearFlag, LinearPhysics):
    """Exact advection-diffusion on the torus :math:`[0, L)^d` (d = 1, 2) as a ``LinearPhysics``.

    :param grid: ``(n,)`` or ``(n_x, n_y)``; signals are ``(B, C, *grid)``, grid :math:`x_j = jL/n`.
    :param kappa: diffusivity :math:`\\kappa \\ge 0`.
    :param velocity: advection velocity :math:`\\mathbf c` (a number in 1D, a pair in 2D).
    :param length: domain size :math:`L` (a number, or one per axis).
    :param t_final, n_frames: saved times :math:`t_k = kT/(K-1)` (the first frame is :math:`u_0`).
    :param output: ``"trajectory"`` -> ``(B, C, n_frames, *grid)``; ``"final"`` -> ``(B, C, *grid)``.

    >>> op = AdvectionDiffusion((32,), kappa=0.0, velocity=0.25, length=1.0, t_final=1.0, n_frames=2)
    >>> x = torch.sin(2 * torch.pi * torch.arange(32) / 32).reshape(1, 1, 32)
    >>> torch.allclose(op(x)[0, 0, -1], torch.roll(x[0, 0], 8), atol=1e-5)   # shift by c T = L / 4
    True
    """

    def __init__(self, grid: Sequence[int] = (128,), kappa: float = 0.01, velocity: float | Sequence[float] = 0.0,
                 length: float | Sequence[float] = 1.0, t_final: float = 1.0, n_frames: int = 11,
                 output: str = "trajectory", **kwargs):
        super().__init__(**kwargs)
        grid = (int(grid),) if isinstance(grid, int) else tuple(int(n) for n in grid)
        d = len(grid)
        if d not in (1, 2):
            raise ValueError(f"grid: expected 1 or 2 axes, got {grid}")
        vel = (float(velocity),) * d if isinstance(velocity, (int, float)) else tuple(float(v) for v in velocity)
        lengths = (float(length),) * d if isinstance(length, (int, float)) else tuple(float(v) for v in length)
        if len(vel) != d or len(lengths) != d:
            raise ValueError(f"velocity/length: expected {d} values for grid {grid}, got {vel} / {lengths}")
        check_positive_finite("kappa", kappa, allow_zero=True)
        for v in vel:
            finite_number("velocity", v)
        check_positive_finite("t_final", t_final)
        for L in lengths:
            check_positive_finite("length", L)
        if int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"n_frames: expected an integer >= 1, got {n_frames}")
        if output not in ("trajectory", "final"):
            raise ValueError(f"output: expected 'trajectory' or 'final', got {output!r}")
        self.grid, self.kappa, self.velocity, self.lengths = grid, float(kappa), vel, lengths
        self.t_final, self.n_frames, self.output = float(t_final), int(n_frames), output
        self.x_shape = (1, *grid)
        self._cache: dict = {}

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape of one output (no batch axis)."""
        return (1, *self.grid) if self.output == "final" else (1, self.n_frames, *self.grid)

    @property
    def times(self) -> torch.Tensor:
        """Saved times (float64): ``n_frames`` points in :math:`[0, T]`, or just :math:`T` for ``output="final"``."""
        if self.output == "final":
            return torch.tensor([self.t_final], dtype=torch.float64)
        return torch.linspace(0.0, self.t_final, self.n_frames, dtype=torch.float64) if self.n_frames > 1 else torch.zeros(1, dtype=torch.float64)

    def multipliers(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Fourier multipliers :math:`m(t_j, k)`, shape ``(n_times, *rfft_grid)`` (complex)."""
        key = (dtype, str(device))
        if key not in self._cache:
            ks = wavenumbers(self.grid, self.lengths, device)
            kd = derivative_wavenumbers(self.grid, self.lengths, device)
            k2 = sum(k**2 for k in ks)
            ck = sum(c * k for c, k in zip(self.velocity, kd))
            t = self.times.to(device).reshape(-1, *([1] * len(self.grid)))
            m = torch.exp((-self.kappa * k2 - 1j * ck) * t)
            self._cache[key] = m.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        return self._cache[key]

    def _fft(self, u):
        return torch.fft.rfftn(u, dim=tuple(range(-len(self.grid), 0)))

    def _ifft(self, u_hat):
        d = len(self.grid)
        return torch.fft.irfftn(u_hat, s=self.grid, dim=tuple(range(-d, 0)))

    def A(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        """:math:`u_0` ``(B, C, *grid)`` -> ``(B, C, n_frames, *grid)`` (or ``(B, C, *grid)`` if final)."""
        check_floating("u0", x)
        check_shape("u0", x, (None, None, *self.grid))
        m = self.multipliers(x.dtype, x.device)
        y = self._ifft(m * self._fft(x).unsqueeze(2))
        return y[:, :, 0] if self.output == "final" else y

    def A_adjoint(self, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """:math:`A^\\top y = \\sum_j \\mathcal F^{-1}[\\overline{m_j}\\, \\mathcal F y_j]`."""
        check_floating("y", y)
        if self.output == "final":
            check_shape("y", y, (None, None, *self.grid))
            y = y.unsqueeze(2)
        else:
            check_shape("y", y, (None, None, self.n_frames, *self.grid))
        m = self.multipliers(y.dtype, y.device)
        return self._ifft((m.conj() * self._fft(y)).sum(2))
