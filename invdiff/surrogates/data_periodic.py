r"""Periodic viscous Burgers trajectories with a random viscosity: the latent surrogate's data.

.. math::
    u_t + \left(\tfrac12 u^2\right)_x = \nu u_{xx}, \qquad x \in [0, 1) \text{ periodic},\ t \in [0, T],\ T = 1,

solved by invdiff's pseudo-spectral ETDRK4 solver (:class:`~invdiff.operators.pde.BurgersPeriodic`,
2/3 dealiased) on a fine grid of ``solve_factor * nx`` points (default 8 x 64 = 512) and saved on
every ``solve_factor``-th point, which on the torus is exactly the grid :math:`x_j = j/n_x`. Per
trajectory :math:`i` (generator seeded by ``(seed, i)`` as in :mod:`invdiff.datasets.pde`):

* :math:`\log_{10}\nu \sim U[-2.5, -1.5]` (log-uniform over the decade around :math:`\nu = 0.01`);
* :math:`u_0` a zero-mean Gaussian random field on the torus
  (:func:`~invdiff.datasets.pde.gaussian_random_field`, covariance
  :math:`\propto (4\pi^2 m^2 + \tau^2)^{-\alpha}`, :math:`\alpha = 3`, :math:`\tau = 5`) scaled so that
  its pointwise standard deviation is exactly ``u_std`` = 0.5 (:func:`grf_sigma`).

Shocks form at :math:`t \approx 1/\max(-u_0') \approx 0.3` and are smeared over a width
:math:`\sim \nu/\Delta u`, so the smallest viscosities give near-discontinuous fronts at 64
nodes. The solver's ``nt + 1`` frames :math:`t_k = kT/n_t` are saved and the last one dropped
(as in :mod:`invdiff.surrogates.data`), so that grids nest when ``nt`` and ``nx`` double.
One solve per chunk of trajectories: the viscosity enters the ETDRK4 coefficients as a
per-trajectory multiplier (:class:`BurgersPeriodicNu`).

>>> d = periodic_burgers_trajectories(2, seed=0, nx=16, nt=8)   # doctest: +SKIP
>>> d["u"].shape, d["nu"].shape                                  # doctest: +SKIP
(torch.Size([2, 8, 16]), torch.Size([2]))
"""
from __future__ import annotations

import math

import torch

from invdiff.operators.pde import BurgersPeriodic

__all__ = ["PERIODIC_DEFAULTS", "BurgersPeriodicNu", "grf_sigma", "nu_channel", "periodic_burgers_trajectories", "periodic_inputs", "periodic_solve"]

PERIODIC_DEFAULTS = dict(t_final=1.0, log10_nu=(-2.5, -1.5), u_std=0.5, grf_alpha=3.0, grf_tau=5.0, solve_factor=8, dt_max=1e-3)


class BurgersPeriodicNu(BurgersPeriodic):
    r""":class:`~invdiff.operators.pde.BurgersPeriodic` with one viscosity per trajectory.

    ``nu`` is a tensor ``(B,)``: the ETDRK4 linear part :math:`-\nu_b k^2` gets a batch axis (the
    parent's ``_linear_symbol`` hook) and every other piece (dealiased nonlinear term, time grid,
    frames) is the parent's. Its input must be ``(B, 1, n)`` with the same ``B``.

    >>> s = BurgersPeriodicNu(n=16, nu=torch.tensor([0.01, 0.1]), t_final=0.1, n_frames=2)
    >>> s(torch.zeros(2, 1, 16)).shape
    torch.Size([2, 1, 2, 16])
    """

    def __init__(self, n: int, nu: torch.Tensor, **kwargs):
        nu = torch.as_tensor(nu, dtype=torch.float64).reshape(-1)
        if nu.numel() == 0 or not bool(torch.isfinite(nu).all()) or bool((nu <= 0).any()):
            raise ValueError(f"nu: expected finite viscosities > 0, got {nu.tolist()}")
        super().__init__(n=n, nu=float(nu[0]), **kwargs)
        self.nu_batch = nu

    def check_input(self, u0: torch.Tensor) -> None:
        super().check_input(u0)
        if u0.shape[0] != self.nu_batch.numel() or u0.shape[1] != 1:
            raise ValueError(f"u0: expected ({self.nu_batch.numel()}, 1, {self.grid[0]}) (one trajectory per nu), got {tuple(u0.shape)}")

    def _linear_symbol(self, k: torch.Tensor) -> torch.Tensor:
        return -self.nu_batch.to(k.device).reshape(-1, 1, 1) * k**2  # (B, 1, n//2+1)


def grf_sigma(n: int, alpha: float, tau: float, std: float, length: float = 1.0) -> float:
    r"""The ``sigma`` of :func:`~invdiff.datasets.pde.gaussian_random_field` giving pointwise standard deviation ``std``.

    With the field's normalisation, :math:`\mathrm{Var}\,u(x) = \sigma^2 \sum_{m \ne 0} (4\pi^2 m^2/L^2 + \tau^2)^{-\alpha}`
    over the ``n`` frequencies of the grid.

    >>> round(grf_sigma(512, 3.0, 5.0, 0.5), 1)
    178.6
    """
    m = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
    spec = ((2 * math.pi * m / length) ** 2 + tau**2) ** (-alpha) * (m != 0)
    return std / math.sqrt(float(spec.sum()))


def periodic_solve(u0: torch.Tensor, nu: torch.Tensor, nt: int, t_final: float = 1.0, dt_max: float = 1e-3) -> torch.Tensor:
    """Solve from ``u0`` ``(B, n)`` with viscosities ``nu`` ``(B,)`` on ``nt + 1`` frames; return ``(B, nt, n)``
    (the last frame dropped, see the module docstring), in the dtype of ``u0``."""
    if u0.ndim != 2 or nu.reshape(-1).numel() != u0.shape[0]:
        raise ValueError(f"periodic_solve: expected u0 (B, n) and nu (B,), got {tuple(u0.shape)} and {tuple(nu.shape)}")
    solver = BurgersPeriodicNu(n=u0.shape[-1], nu=nu, t_final=t_final, n_frames=nt + 1, dt_max=dt_max)
    with torch.no_grad():
        return solver(u0[:, None])[:, 0, :-1]


def periodic_inputs(n: int, seed: int, nx: int = 64, start: int = 0, **overrides) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The random inputs of samples ``start .. start + n - 1``: initial states on the solver grid
    ``(n, solve_factor * nx)``, viscosities ``(n,)`` (both float64) and the settings used."""
    from invdiff.datasets.pde import _sample_generator, gaussian_random_field
    from invdiff.utils.random import rand

    unknown = set(overrides) - set(PERIODIC_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected some of {sorted(PERIODIC_DEFAULTS)}")
    cfg = dict(PERIODIC_DEFAULTS, **overrides)
    if n < 1 or nx < 4:
        raise ValueError(f"expected n >= 1 and nx >= 4; got n={n}, nx={nx}")
    lo, hi = cfg["log10_nu"]
    if not lo <= hi:
        raise ValueError(f"log10_nu: expected (low, high) with low <= high, got {cfg['log10_nu']}")
    fine = nx * int(cfg["solve_factor"])
    sigma = grf_sigma(fine, cfg["grf_alpha"], cfg["grf_tau"], cfg["u_std"])
    nus, u0s = [], []
    for i in range(start, start + n):
        g = _sample_generator(seed, i)
        nus.append(10 ** (lo + (hi - lo) * rand((1,), generator=g, dtype=torch.float64)))
        u0s.append(gaussian_random_field((fine,), cfg["grf_alpha"], cfg["grf_tau"], sigma=sigma, generator=g))
    return torch.cat(u0s), torch.cat(nus), cfg


def periodic_burgers_trajectories(n: int, seed: int, nx: int = 64, nt: int = 32, start: int = 0, chunk: int = 128,
                                  dtype: torch.dtype = torch.float32, **overrides) -> dict[str, torch.Tensor]:
    """``n`` trajectories ``u`` ``(n, nt, nx)`` with ``u0`` ``(n, nx)`` and ``nu`` ``(n,)``; sample ``i``
    depends only on ``(seed, start + i)``. Settings: :data:`PERIODIC_DEFAULTS`, overridable by keyword."""
    if nt < 2:
        raise ValueError(f"nt: expected >= 2 frames, got {nt}")
    u0, nu, cfg = periodic_inputs(n, seed, nx, start, **overrides)
    us = [periodic_solve(u0[s:s + chunk], nu[s:s + chunk], nt, cfg["t_final"], cfg["dt_max"]) for s in range(0, n, chunk)]
    u = torch.cat(us)[..., :: int(cfg["solve_factor"])].to(dtype)
    return dict(u=u, u0=u[:, 0].clone(), nu=nu.to(dtype))


def nu_channel(nu: torch.Tensor, nt: int, nx: int, log10_nu=PERIODIC_DEFAULTS["log10_nu"]) -> torch.Tensor:
    r"""The viscosity as a constant field ``(B, nt, nx)``: :math:`2(\log_{10}\nu - a)/(b - a) - 1` for the range
    :math:`[10^a, 10^b]` (the FNO baseline's input channel for :math:`\nu`).

    >>> nu_channel(torch.tensor([0.01]), 2, 3)[0, 0].tolist()
    [0.0, 0.0, 0.0]
    """
    a, b = (float(v) for v in log10_nu)
    s = 2 * (torch.log10(torch.as_tensor(nu).reshape(-1)) - a) / (b - a) - 1
    return s[:, None, None].expand(-1, nt, nx).contiguous()
