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

from invdiff.operators.common import check_positive_finite
from invdiff.utils import check_shape

from .base import PDESolver
from .spectral import ETDRK4, _last_axis_weights, dealias_mask, derivative_wavenumbers, wavenumbers


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
        check_positive_finite("nu", nu)
        check_positive_finite("length", length)
        if n < 4:
            raise ValueError(f"n: expected at least 4 grid points, got {n}")
        super().__init__((n,), t_final, n_frames, dt_max, output, progress)
        self.nu, self.length = float(nu), float(length)

    @property
    def x(self) -> torch.Tensor:
        """Grid :math:`x_j = jL/n` (float64)."""
        return torch.arange(self.grid[0], dtype=torch.float64) * self.length / self.grid[0]

    def _linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        """The Fourier symbol :math:`-\\nu k^2` of the linear (viscous) part at the wavenumbers ``k`` (a subclass
        may give it leading batch axes, e.g. one viscosity per trajectory)."""
        return -self.nu * k**2

    def _prepare(self, dt, dtype, device):
        (k,) = wavenumbers(self.grid, (self.length,), device)
        (kd,) = derivative_wavenumbers(self.grid, (self.length,), device)
        stepper = ETDRK4(self._linear_symbol(k), dt, dtype=dtype)
        M = (-0.5j * kd * dealias_mask(self.grid, device)).to(stepper.E.dtype)
        return stepper, _BurgersNonlinear(M, self.grid[0])

    def _begin(self, u0, tables):
        return torch.fft.rfft(u0, dim=-1)

    def _step(self, v, t, tables):
        stepper, nonlinear = tables
        return stepper.step(v, nonlinear)

    def _field(self, v, tables):
        return torch.fft.irfft(v, n=self.grid[0], dim=-1)


class _BurgersNonlinear:
    r""":math:`N(\hat u) = M \odot \mathrm{rfft}(u^2)`, :math:`u = \mathrm{irfft}(\hat u)`,
    :math:`M = -\tfrac{i}{2} k P`, with its adjoint :math:`\bar{\hat u} = \mathrm{irfft}^*(2u\,
    \mathrm{rfft}^*(\bar M \bar N))` (see :func:`~invdiff.operators.pde.spectral.rfftn_vjp`; the
    constant weights of the two adjoint transforms are folded into two multipliers)."""

    def __init__(self, M: torch.Tensor, n: int):
        self.M, self.n = M, n
        w = _last_axis_weights(n, M.shape[-1], M.device, M.real.dtype)
        self.Mbar_rfft_adj = M.conj().resolve_conj() * (n / w)  # rfft^* = n irfft(. / w)
        self.irfft_adj_2u = 2 * w / n  # irfft^* = w rfft(.) / n, times the 2 of d(u^2)/du

    def forward(self, v):
        u = torch.fft.irfft(v, n=self.n, dim=-1)
        return self.M * torch.fft.rfft(u * u, dim=-1), u

    def vjp(self, u, Nbar):
        qbar = torch.fft.irfft(self.Mbar_rfft_adj * Nbar, n=self.n, dim=-1)
        return torch.fft.rfft(u * qbar, dim=-1) * self.irfft_adj_2u


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
        check_positive_finite("nu", nu)
        check_positive_finite("length", length)
        check_positive_finite("u_max", u_max)
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

    def _forcing(self, t: float, x_in: torch.Tensor) -> torch.Tensor | None:
        f = self._current_forcing
        return None if f is None else gaussian_forcing(f, t, x_in)

    def _begin(self, u0, x_in):
        return torch.nn.functional.pad(u0[..., 1:-1], (1, 1)), self._forcing(0.0, x_in)

    def _step(self, state, t, x_in):
        u, f1 = state
        dt = self.dt
        f2, f4 = self._forcing(t + 0.5 * dt, x_in), self._forcing(t + dt, x_in)
        if f1 is None:
            f1 = f2 = f4 = torch.zeros((), dtype=u.dtype, device=u.device)
        return _DirichletRK4Step.apply(u, f1, f2, f4, self.h, self.nu, dt), (None if self._current_forcing is None else f4)

    def _field(self, state, x_in):
        return state[0]


def _dirichlet_rhs(u: torch.Tensor, h: float, nu: float) -> torch.Tensor:
    """Interior right-hand side (without forcing) of :class:`BurgersDirichlet`, ``(..., n-2)``."""
    um, uc, up = u[..., :-2], u[..., 1:-1], u[..., 2:]
    return (nu / (h * h)) * (up - 2 * uc + um) - (up * up - um * um + uc * (up - um)) / (6 * h)


def _dirichlet_rhs_vjp(u: torch.Tensor, v: torch.Tensor, h: float, nu: float) -> torch.Tensor:
    r""":math:`J(u)^\top v` of :func:`_dirichlet_rhs` (``v``: ``(..., n-2)``) as ``(..., n)``.

    With :math:`a_j = -[u_{j+1}^2 - u_{j-1}^2 + u_j (u_{j+1} - u_{j-1})]/(6h)` and :math:`v` extended by zeros,

    .. math::
        (J^\top v)_i = \frac{v_{i+1}(2u_i + u_{i+1}) - v_{i-1}(2u_i + u_{i-1}) - v_i (u_{i+1} - u_{i-1})}{6h}
                       + \frac{\nu}{h^2}(v_{i+1} - 2 v_i + v_{i-1}).
    """
    V = torch.nn.functional.pad(v, (2, 2))  # v on all n nodes (zero at the ends), plus one ghost each side
    U = torch.nn.functional.pad(u, (1, 1))
    vm, vc, vp = V[..., :-2], V[..., 1:-1], V[..., 2:]
    um, uc, up = U[..., :-2], U[..., 1:-1], U[..., 2:]
    adv = (vp * (2 * uc + up) - vm * (2 * uc + um) - vc * (up - um)) / (6 * h)
    return adv + (nu / (h * h)) * (vp - 2 * vc + vm)


def _sum_to(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum a gradient over the axes along which ``like`` (same ndim, or a 0-d tensor) was broadcast."""
    if like.dim() == 0:
        return g.sum()
    dims = [i for i in range(g.dim()) if like.shape[i] == 1 and g.shape[i] != 1]
    return g.sum(dim=dims, keepdim=True) if dims else g


class _DirichletRK4Step(torch.autograd.Function):
    r"""One classical RK4 step of :class:`BurgersDirichlet` with a hand-written discrete adjoint.

    Forward: :math:`k_1 = F(u) + f_1,\ k_2 = F(u + \tfrac{\Delta t}{2}k_1) + f_2,\
    k_3 = F(u + \tfrac{\Delta t}{2}k_2) + f_2,\ k_4 = F(u + \Delta t k_3) + f_4`,
    :math:`u^+ = u + \tfrac{\Delta t}{6}(k_1 + 2k_2 + 2k_3 + k_4)` on the interior. Backward: the exact
    transpose of that map (reverse sweep over the stages with :func:`_dirichlet_rhs_vjp`), one
    autograd node per step instead of about seventy, which keeps a gradient near twice a solve.
    Gradients also flow to the forcing values ``f1, f2, f4``.
    """

    @staticmethod
    def forward(ctx, u, f1, f2, f4, h, nu, dt):
        def F(w, f):
            k = _dirichlet_rhs(w, h, nu) + f
            return torch.nn.functional.pad(k, (1, 1))

        k1 = F(u, f1)
        u1 = u + 0.5 * dt * k1
        k2 = F(u1, f2)
        u2 = u + 0.5 * dt * k2
        k3 = F(u2, f2)
        u3 = u + dt * k3
        k4 = F(u3, f4)
        ctx.save_for_backward(u, u1, u2, u3, f1, f2, f4)
        ctx.consts = (h, nu, dt)
        return u + (dt / 6) * (k1 + 2 * k2 + 2 * k3 + k4)

    @staticmethod
    def backward(ctx, ybar):
        u, u1, u2, u3, f1, f2, f4 = ctx.saved_tensors
        h, nu, dt = ctx.consts
        kb = ybar[..., 1:-1]  # stage outputs are padded: only interior cotangents matter
        k4b, k3b, k2b, k1b = (dt / 6) * kb, (dt / 3) * kb, (dt / 3) * kb, (dt / 6) * kb
        ubar = ybar
        g3 = _dirichlet_rhs_vjp(u3, k4b, h, nu)  # cotangent of u3 = u + dt k3
        ubar = ubar + g3
        k3b = k3b + dt * g3[..., 1:-1]
        g2 = _dirichlet_rhs_vjp(u2, k3b, h, nu)  # u2 = u + dt/2 k2
        ubar = ubar + g2
        k2b = k2b + 0.5 * dt * g2[..., 1:-1]
        g1 = _dirichlet_rhs_vjp(u1, k2b, h, nu)  # u1 = u + dt/2 k1
        ubar = ubar + g1
        k1b = k1b + 0.5 * dt * g1[..., 1:-1]
        ubar = ubar + _dirichlet_rhs_vjp(u, k1b, h, nu)
        grads = [ubar]
        for f, fb in ((f1, k1b), (f2, k2b + k3b), (f4, k4b)):
            grads.append(_sum_to(fb, f) if ctx.needs_input_grad[len(grads)] else None)
        return (*grads, None, None, None)
