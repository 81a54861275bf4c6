"""1D viscous Burgers equation: periodic pseudo-spectral (ETDRK4) and forced Dirichlet (WDNO set-up).

.. math::
    u_t + \\left(\\tfrac12 u^2\\right)_x = \\nu u_{xx} + f(t, x)

* :class:`BurgersPeriodic`: the torus :math:`[0, L)`, Fourier pseudo-spectral in space with 2/3
  dealiasing, ETDRK4 in time (Kassam & Trefethen 2005). Spectrally accurate in space, fourth
  order in time; checked against the Cole-Hopf solution :func:`cole_hopf`.
* :class:`BurgersDirichlet`: :math:`x \\in [0, 1]`, :math:`u(t, 0) = u(t, 1) = 0`, forcing a sum of
  space-time Gaussians (:func:`gaussian_forcing`): the data set-up of WDNO (Hu et al., ICLR 2025)
  and DiffPhyCon (Wu et al., NeurIPS 2024). Second-order finite differences on the nodes
  :math:`x_j = j/(n-1)` (skew-symmetric, energy-conserving advection; central diffusion), classical
  RK4 in time with a CFL-limited step, so the global error is :math:`O(h^2)` (the time error,
  :math:`O(\\Delta t^4)` with :math:`\\Delta t \\propto h^2`, is far smaller).
"""
from __future__ import annotations

import math

import torch

from invdiff.operators.registry import register
from invdiff.utils import check_positive, check_shape

from .base import PDESolver
from .spectral import ETDRK4, dealias_mask, derivative_wavenumbers, wavenumbers


def cole_hopf(x: torch.Tensor, t: float, nu: float, k: float = 1.0, eps: float = 0.5) -> torch.Tensor:
    """Exact periodic solution of viscous Burgers from the Cole-Hopf transform.

    With :math:`\\phi = 1 + e\\cos kx`, :math:`e = \\epsilon e^{-\\nu k^2 t}` (a solution of the heat
    equation), :math:`u = -2\\nu \\phi_x / \\phi` solves :math:`u_t + u u_x = \\nu u_{xx}`:

    .. math::
        u(t, x) = \\frac{2 \\nu k\\, e \\sin kx}{1 + e \\cos kx}.

    >>> x = torch.linspace(0, 2 * math.pi, 5, dtype=torch.float64)
    >>> cole_hopf(x, 0.0, nu=0.1).abs().max() < 0.2
    tensor(True)
    """
    if not 0 <= eps < 1:
        raise ValueError(f"cole_hopf: expected 0 <= eps < 1 (phi > 0), got {eps}")
    e = eps * math.exp(-nu * k * k * t)
    return 2 * nu * k * e * torch.sin(k * x) / (1 + e * torch.cos(k * x))


class BurgersPeriodic(PDESolver):
    """Viscous Burgers on the torus :math:`[0, L)`: pseudo-spectral, 2/3 dealiased, ETDRK4.

    In Fourier space, :math:`\\hat u_t = -\\nu k^2 \\hat u - \\tfrac{i k}{2} P\\,\\widehat{u^2}`
    with :math:`P` the 2/3 mask; the stiff linear part is integrated exactly by :class:`ETDRK4`.
    The mean :math:`\\hat u_0` is conserved exactly (the nonlinear term has no :math:`k = 0` part).

    :param n: grid points, :math:`x_j = jL/n`.
    :param nu: viscosity :math:`\\nu > 0`.
    :param length: period :math:`L`.
    :param t_final, n_frames, dt_max, output: see :class:`~invdiff.operators.pde.base.PDESolver`.

    >>> solver = BurgersPeriodic(n=64, nu=0.1, length=2 * math.pi, t_final=1.0, n_frames=3)
    >>> x = torch.arange(64, dtype=torch.float64) * 2 * math.pi / 64
    >>> y = solver(cole_hopf(x, 0.0, 0.1).reshape(1, 1, 64))
    >>> (y[0, 0, -1] - cole_hopf(x, 1.0, 0.1)).abs().max() < 1e-8
    tensor(True)
    """

    def __init__(self, n: int = 256, nu: float = 0.01, length: float = 1.0, t_final: float = 1.0,
                 n_frames: int = 11, dt_max: float = 1e-3, output: str = "trajectory", progress: bool = False):
        check_positive("nu", nu)
        check_positive("length", length)
        if n < 4:
            raise ValueError(f"n: expected at least 4 grid points, got {n}")
        super().__init__((n,), t_final, n_frames, dt_max, output, progress)
        self.nu, self.length = float(nu), float(length)

    @property
    def x(self) -> torch.Tensor:
        """Grid :math:`x_j = jL/n` (float64)."""
        return torch.arange(self.grid[0], dtype=torch.float64) * self.length / self.grid[0]

    def _prepare(self, dt, dtype, device):
        (k,) = wavenumbers(self.grid, (self.length,), device)
        (kd,) = derivative_wavenumbers(self.grid, (self.length,), device)
        stepper = ETDRK4(-self.nu * k**2, dt, dtype=dtype)
        cdt = stepper.E.dtype
        return stepper, (-0.5j * kd * dealias_mask(self.grid, device)).to(cdt)

    def _begin(self, u0, tables):
        return torch.fft.rfft(u0, dim=-1)

    def _step(self, v, t, tables):
        stepper, ikmask = tables
        n = self.grid[0]
        return stepper.step(v, lambda w, s: ikmask * torch.fft.rfft(torch.fft.irfft(w, n=n, dim=-1) ** 2, dim=-1), t)

    def _field(self, v, tables):
        return torch.fft.irfft(v, n=self.grid[0], dim=-1)


def gaussian_forcing(params: torch.Tensor, t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A sum of space-time Gaussians, evaluated on the grid ``x`` at time(s) ``t``.

    .. math::
        f(t, x) = \\sum_{i=1}^{K} a_i \\exp\\!\\Big(-\\frac{(x - c_i)^2}{2 s_i^2}
                  - \\frac{(t - \\tau_i)^2}{2 r_i^2}\\Big)

    :param params: ``(B, K, 5)`` columns :math:`(a_i, c_i, s_i, \\tau_i, r_i)`.
    :param t: a time, or a ``(T,)`` tensor of times.
    :param x: ``(n,)`` grid.
    :return: ``(B, 1, n)`` for a scalar ``t``, ``(B, 1, T, n)`` for a tensor of times.

    >>> p = torch.tensor([[[1.0, 0.5, 0.1, 0.0, 1.0]]])
    >>> gaussian_forcing(p, 0.0, torch.tensor([0.5]))
    tensor([[[1.]]])
    """
    check_shape("forcing params", params, (None, None, 5))
    a, c, s, tau, r = (params[..., i] for i in range(5))  # (B, K)
    x = x.to(params)
    space = torch.exp(-((x[None, None, :] - c[..., None]) ** 2) / (2 * s[..., None] ** 2))  # (B, K, n)
    if isinstance(t, torch.Tensor) and t.dim() == 1:
        t = t.to(params)
        time = a[:, :, None] * torch.exp(-((t[None, None, :] - tau[..., None]) ** 2) / (2 * r[..., None] ** 2))  # (B, K, T)
        return torch.einsum("bkt,bkn->btn", time, space).unsqueeze(1)
    time = a * torch.exp(-((t - tau) ** 2) / (2 * r**2))  # (B, K)
    return torch.einsum("bk,bkn->bn", time, space).unsqueeze(1)


class BurgersDirichlet(PDESolver):
    """Forced viscous Burgers on :math:`[0, L]` with :math:`u = 0` at both ends (the WDNO set-up).

    Nodes :math:`x_j = jL/(n-1)`, :math:`j = 0..n-1`; boundary values are held at 0 (an input
    ``u0`` has its two end values overwritten). Interior semi-discretisation, second order:

    .. math::
        \\dot u_j = -\\frac{1}{3}\\Big[\\frac{u_{j+1}^2 - u_{j-1}^2}{2h}
                    + u_j \\frac{u_{j+1} - u_{j-1}}{2h}\\Big]
                    + \\nu \\frac{u_{j+1} - 2u_j + u_{j-1}}{h^2} + f(t, x_j).

    The skew-symmetric advection conserves :math:`\\sum_j u_j^2` (no spurious energy growth).
    Time: classical RK4 with :math:`\\Delta t \\le \\min(c_d h^2/\\nu,\\; c_a h / u_{\\max})`,
    :math:`c_d = 0.5` (RK4's real-axis bound is 0.696 for this stencil), :math:`c_a = 1`
    (bound :math:`2\\sqrt2`); ``u_max`` is the largest :math:`|u|` expected (set it for strong data).

    Default resolution: ``n = 128`` nodes, ``t_final = 8``, ``n_frames = 81`` (80 steps of 0.1 plus
    the initial frame), :math:`\\nu = 0.01`, as in WDNO's Burgers data (about 80 x 120).

    :param forcing: ``(B, K, 5)`` Gaussian parameters (:func:`gaussian_forcing`), ``(1, K, 5)`` to
        share across the batch, or ``None`` (unforced). ``A(u0, forcing=...)`` overrides it per call.

    >>> solver = BurgersDirichlet(n=33, t_final=0.1, n_frames=2)
    >>> solver(torch.zeros(2, 1, 33)).shape
    torch.Size([2, 1, 2, 33])
    """

    def __init__(self, n: int = 128, nu: float = 0.01, length: float = 1.0, t_final: float = 8.0,
                 n_frames: int = 81, forcing: torch.Tensor | None = None, u_max: float = 4.0,
                 dt_max: float | None = None, output: str = "trajectory", progress: bool = False):
        check_positive("nu", nu)
        check_positive("length", length)
        check_positive("u_max", u_max)
        if n < 3:
            raise ValueError(f"n: expected at least 3 nodes, got {n}")
        h = length / (n - 1)
        cfl = min(0.5 * h * h / nu, h / u_max)
        dt_max = cfl if dt_max is None else min(dt_max, cfl)
        super().__init__((n,), t_final, n_frames, dt_max, output, progress)
        self.nu, self.length, self.h, self.u_max = float(nu), float(length), h, float(u_max)
        if forcing is not None:
            check_shape("forcing", forcing, (None, None, 5))
        self.forcing = forcing

    @property
    def x(self) -> torch.Tensor:
        """Nodes :math:`x_j = jL/(n-1)` including both boundaries (float64)."""
        return torch.linspace(0.0, self.length, self.grid[0], dtype=torch.float64)

    def A(self, u0: torch.Tensor, forcing: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """Solve from ``u0`` ``(B, C, n)``; ``forcing`` overrides the stored Gaussian parameters."""
        self.check_input(u0)
        f = self.forcing if forcing is None else forcing
        if f is not None:
            check_shape("forcing", f, (None, None, 5))
            if f.shape[0] not in (1, u0.shape[0]):
                raise ValueError(f"forcing: expected batch 1 or {u0.shape[0]} (as u0), got {f.shape[0]}")
        self._current_forcing = None if f is None else f.to(u0)
        try:
            return super().A(u0)
        finally:
            self._current_forcing = None

    def _prepare(self, dt, dtype, device):
        return self.x[1:-1].to(device=device, dtype=dtype)

    def _rhs(self, u, t, x_in):
        um, uc, up = u[..., :-2], u[..., 1:-1], u[..., 2:]
        h = self.h
        adv = -(up * up - um * um + uc * (up - um)) / (6 * h)
        rhs = adv + self.nu * (up - 2 * uc + um) / (h * h)
        f = self._current_forcing
        if f is not None:
            rhs = rhs + gaussian_forcing(f, t, x_in)
        return torch.nn.functional.pad(rhs, (1, 1))

    def _begin(self, u0, x_in):
        return torch.nn.functional.pad(u0[..., 1:-1], (1, 1))

    def _step(self, u, t, x_in):
        dt = self.dt
        k1 = self._rhs(u, t, x_in)
        k2 = self._rhs(u + 0.5 * dt * k1, t + 0.5 * dt, x_in)
        k3 = self._rhs(u + 0.5 * dt * k2, t + 0.5 * dt, x_in)
        k4 = self._rhs(u + dt * k3, t + dt, x_in)
        return u + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    def _field(self, u, x_in):
        return u


@register("pde-burgers", "1D periodic viscous Burgers (pseudo-spectral, ETDRK4): u0 -> trajectory")
def _make_burgers(**kw) -> BurgersPeriodic:
    return BurgersPeriodic(**kw)


@register("pde-burgers-dirichlet", "forced 1D Burgers on [0,1], u=0 at the ends (WDNO set-up): u0 -> trajectory")
def _make_burgers_dirichlet(**kw) -> BurgersDirichlet:
    return BurgersDirichlet(**kw)
