r"""A minimal Fourier neural operator over (t, x): the deterministic surrogate baseline.

FNO (Li et al., "Fourier Neural Operator for Parametric PDEs", ICLR 2021) maps the lifted input
:math:`v_0 = P(a)` through layers

.. math::
    v_{l+1} = \mathrm{GELU}\big(W_l v_l + \mathcal F^{-1}(R_l \cdot \mathcal F v_l)\big),

with :math:`R_l` complex weights on the lowest ``modes`` Fourier modes of each axis, then
projects :math:`u = Q(v_L)`. Here the input :math:`a` is :math:`(u_0(x)` repeated over time,
:math:`f(t, x)`, :math:`t`, :math:`x)` on the trajectory grid, and the output the whole
trajectory (the "2D FNO over space-time" variant of the paper). The domain is not periodic
(Dirichlet ends, a start and an end in time), so the fields are zero-padded by ``pad`` points
on the high side of each axis before the FFTs, as in the paper's reference set-up.

Why not the ``neuraloperator`` package: it pins its own dependency set (``tensorly``,
``tensorly-torch``, ``opt-einsum``, ``zarr``, ``wandb``-style configuration via ``configmypy``) for
a model of about sixty lines here, and invdiff keeps its dependency list short and offline.

>>> import torch
>>> net = FNO2d(modes=(4, 4), width=8, layers=2)
>>> net(torch.zeros(2, 16), torch.zeros(2, 8, 16)).shape
torch.Size([2, 8, 16])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from invdiff.utils.checks import check_floating

__all__ = ["FNO2d", "SpectralConv2d", "persistence"]


class SpectralConv2d(nn.Module):
    r""":math:`\mathcal F^{-1}(R \cdot \mathcal F v)` on the lowest ``modes`` (both signs along axis -2)."""

    def __init__(self, cin: int, cout: int, modes: tuple[int, int]):
        super().__init__()
        self.modes = modes
        scale = 1.0 / (cin * cout)
        self.w = nn.Parameter(scale * torch.randn(2, cin, cout, *modes, 2))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        B, _, H, W = v.shape
        m1, m2 = min(self.modes[0], H // 2), min(self.modes[1], W // 2 + 1)
        vh = torch.fft.rfft2(v)
        w = torch.view_as_complex(self.w)
        out = torch.zeros(B, w.shape[2], H, W // 2 + 1, dtype=vh.dtype, device=v.device)
        out[:, :, :m1, :m2] = torch.einsum("bixy,ioxy->boxy", vh[:, :, :m1, :m2], w[0, :, :, :m1, :m2])
        out[:, :, -m1:, :m2] = torch.einsum("bixy,ioxy->boxy", vh[:, :, -m1:, :m2], w[1, :, :, :m1, :m2])
        return torch.fft.irfft2(out, s=(H, W))


class FNO2d(nn.Module):
    """``net(u0, f) -> u``: ``u0`` ``(B, nx)``, ``f`` ``(B, nt, nx)`` (or ``None``) -> ``(B, nt, nx)``.

    Inputs and output are scaled by ``u_scale`` / ``f_scale`` (set from the training data), and
    frame 0 of the output is ``u0`` itself.
    """

    def __init__(self, modes: Sequence[int] = (12, 16), width: int = 24, layers: int = 4, pad: int = 8):
        super().__init__()
        self.config = dict(modes=list(modes), width=width, layers=layers, pad=pad)
        self.pad = pad
        self.lift = nn.Conv2d(4, width, 1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, tuple(modes)) for _ in range(layers))
        self.local = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.proj = nn.Sequential(nn.Conv2d(width, 4 * width, 1), nn.GELU(), nn.Conv2d(4 * width, 1, 1))
        self.register_buffer("u_scale", torch.ones(()))
        self.register_buffer("f_scale", torch.ones(()))

    def forward(self, u0: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        check_floating("u0", u0)
        if u0.ndim != 2:
            raise ValueError(f"u0: expected (B, nx), got shape {tuple(u0.shape)}")
        B, nx = u0.shape
        if f is None:
            raise ValueError("f: the FNO baseline needs the forcing trajectory (B, nt, nx)")
        if f.ndim != 3 or f.shape[0] != B or f.shape[2] != nx:
            raise ValueError(f"f: expected (B={B}, nt, nx={nx}), got shape {tuple(f.shape)}")
        nt = f.shape[1]
        t = torch.linspace(0, 1, nt, dtype=u0.dtype, device=u0.device)[:, None].expand(nt, nx)
        x = torch.linspace(0, 1, nx, dtype=u0.dtype, device=u0.device)[None, :].expand(nt, nx)
        a = torch.stack([(u0 / self.u_scale)[:, None].expand(B, nt, nx), f / self.f_scale,
                         t.expand(B, nt, nx), x.expand(B, nt, nx)], 1)
        v = F.pad(self.lift(a), (0, self.pad, 0, self.pad))
        for k, (sp, lo) in enumerate(zip(self.spectral, self.local)):
            v = sp(v) + lo(v)
            v = F.gelu(v) if k < len(self.spectral) - 1 else v
        u = self.proj(v[..., :nt, :nx])[:, 0] * self.u_scale
        return torch.cat([u0[:, None], u[:, 1:]], 1)


def persistence(u0: torch.Tensor, nt: int) -> torch.Tensor:
    """The persistence baseline :math:`u(t, x) = u_0(x)`: ``(B, nx)`` -> ``(B, nt, nx)``."""
    check_floating("u0", u0)
    if u0.ndim != 2 or nt < 1:
        raise ValueError(f"persistence: expected u0 (B, nx) and nt >= 1, got {tuple(u0.shape)}, nt={nt}")
    return u0[:, None].expand(-1, nt, -1).clone()
