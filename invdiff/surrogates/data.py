r"""Burgers trajectories for the surrogates: the WDNO forced Dirichlet set-up on a nested grid.

The data are those of :mod:`invdiff.datasets.pde` (``"burgers"``: :math:`u_t + (u^2/2)_x =
\nu u_{xx} + f`, :math:`\nu = 0.01`, :math:`x \in [0, 1]`, :math:`u = 0` at both ends,
:math:`T = 8`, :math:`u_0` a positive and a negative Gaussian bump, :math:`f` eight space-time
Gaussians), solved on ``nx + 1`` nodes and ``nt + 1`` frames; the last node (always 0, the
right boundary) and the last frame are dropped so that the grids nest and the wavelet
transform sees even sizes: coarse node :math:`j` is fine node :math:`2j` and coarse frame
:math:`k` is fine frame :math:`2k` when ``nx`` and ``nt`` double.

>>> d = burgers_trajectories(2, seed=0, nx=16, nt=8)        # doctest: +SKIP
>>> d["u"].shape, d["f"].shape                              # doctest: +SKIP
(torch.Size([2, 8, 16]), torch.Size([2, 8, 16]))
"""
from __future__ import annotations

import torch

__all__ = ["burgers_config", "burgers_trajectories", "burgers_solver"]


def burgers_config(nx: int = 64, nt: int = 32, t_final: float = 8.0, nu: float = 0.01) -> dict:
    """The :func:`invdiff.datasets.pde.default_config` of the Burgers data on ``nx + 1`` nodes and
    ``nt + 1`` frames over ``[0, t_final]``; after :func:`crop`, ``nt`` frames ``t_k = k t_final / nt``."""
    from invdiff.datasets.pde import default_config

    if nx < 4 or nt < 2:
        raise ValueError(f"burgers_config: expected nx >= 4 and nt >= 2, got nx={nx}, nt={nt}")
    return default_config("burgers", resolution=nx + 1, n_frames=nt + 1, t_final=t_final, nu=nu)


def burgers_solver(nx: int = 64, nt: int = 32, t_final: float = 8.0, nu: float = 0.01):
    """The :class:`~invdiff.operators.pde.BurgersDirichlet` solver producing these trajectories
    (its output has one more node and one more frame; see :func:`crop`)."""
    from invdiff.datasets.pde import make_solver

    return make_solver("burgers", burgers_config(nx, nt, t_final, nu))


def crop(u: torch.Tensor) -> torch.Tensor:
    """Drop the last frame and the last node of a solver trajectory ``(..., nt + 1, nx + 1)``."""
    return u[..., :-1, :-1]


def burgers_trajectories(n: int, seed: int, nx: int = 64, nt: int = 32, t_final: float = 8.0, nu: float = 0.01,
                         start: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``n`` trajectories ``u`` and forcings ``f`` ``(n, nt, nx)``, the initial conditions ``u0``
    ``(n, nx)`` and the generating parameters. Sample ``i`` depends only on ``(seed, start + i)``
    (:func:`invdiff.datasets.pde.generate`), so training and held-out sets differ by seed."""
    from invdiff.datasets.pde import generate

    if n < 1:
        raise ValueError(f"n: expected >= 1 trajectories, got {n}")
    out = generate("burgers", burgers_config(nx, nt, t_final, nu), seed=seed, start=start, stop=start + n)
    u = crop(torch.as_tensor(out["u"])).to(dtype)
    f = crop(torch.as_tensor(out["f"])).to(dtype)
    return dict(u=u, f=f, u0=u[:, 0].clone(), u0_params=torch.as_tensor(out["u0_params"]),
                forcing_params=torch.as_tensor(out["forcing_params"]))
