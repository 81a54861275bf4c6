r"""WDNO's super-resolution stage: the wavelet coefficients of a 2x finer trajectory given the coarse one.

A trajectory :math:`U_f` on the fine grid (``2 nt x 2 nx``; the grids nest, coarse point
:math:`(k, j)` is fine point :math:`(2k, 2j)`, :mod:`invdiff.surrogates.data`) has a one-level
periodised DWT of four bands, each ``nt x nx``: the size of the coarse trajectory :math:`U_c`.
The stage is a conditional diffusion model over those four (scaled) bands, conditioned by
concatenation on the coarse trajectory and the coarse forcing (scaled), both aligned with the
bands point by point:

.. math::
    x = \mathrm{scale}(\mathrm{DWT}(U_f)) \in \mathbb R^{4 \times nt \times nx}, \qquad
    D(x, \sigma \mid U_c, f_c) = c_{skip} x + c_{out} F([c_{in} x, \mathrm{scale}(U_c, f_c)], c_{noise}),

trained with the EDM loss on fine solver trajectories (their own sub-sampled coarse version as
the condition). At inference the coarse WDNO trajectory is the condition, so a model trained at
``nt x nx`` yields a ``2nt x 2nx`` trajectory (Hu et al., ICLR 2025, "multi-resolution").

With ``residual=True`` (the default) the bands are those of the residual over linear
interpolation, :math:`x = \mathrm{scale}(\mathrm{DWT}(U_f - I(U_c)))` and
:math:`U_f = I(U_c) + \mathrm{DWT}^{-1}(\mathrm{scale}^{-1}(x))` (residual diffusion as in SR3-style
super-resolution): the model only has to add what interpolation :math:`I` misses, and a model
that predicts a zero residual already equals the interpolation baseline.

>>> import torch
>>> sr = WaveletSR(nt=8, nx=16, channels=(16, 32))
>>> sr.predict(torch.zeros(2, 8, 16), torch.zeros(2, 8, 16), steps=3,
...            generator=torch.Generator().manual_seed(0)).shape
torch.Size([2, 16, 32])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from invdiff.diffusion.denoiser import expand_sigma
from invdiff.diffusion.edm import edm_coefficients
from invdiff.diffusion.networks import UNet
from invdiff.surrogates.wavelet import BandScaler
from invdiff.surrogates.wdno import TrajectoryCodec, generate
from invdiff.utils.checks import check_finite, check_floating, check_shape

__all__ = ["WaveletSR", "coarsen", "interpolate"]


def coarsen(u: torch.Tensor) -> torch.Tensor:
    """The nested coarse trajectory ``u[..., ::2, ::2]`` of a fine one ``(..., 2nt, 2nx)``."""
    return u[..., ::2, ::2]


def interpolate(u: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a coarse trajectory ``(B, nt, nx)`` to the nested fine grid ``(B, 2nt, 2nx)``
    (the last fine frame/node, beyond the coarse grid, extrapolated linearly): the baseline of the stage.

    >>> interpolate(torch.arange(4.0).reshape(1, 2, 2))[0]
    tensor([[0.0000, 0.5000, 1.0000, 1.5000],
            [1.0000, 1.5000, 2.0000, 2.5000],
            [2.0000, 2.5000, 3.0000, 3.5000],
            [3.0000, 3.5000, 4.0000, 4.5000]])
    """
    def along(v: torch.Tensor, dim: int) -> torch.Tensor:
        nxt = torch.cat([v.narrow(dim, 1, v.shape[dim] - 1), 2 * v.narrow(dim, v.shape[dim] - 1, 1) - v.narrow(dim, v.shape[dim] - 2, 1)], dim)
        return torch.stack([v, 0.5 * (v + nxt)], dim + 1).flatten(dim, dim + 1)

    return along(along(u, -2 + u.ndim), u.ndim - 1)


class WaveletSR(nn.Module):
    """Conditional prior ``D(x, sigma, coarse=, f=)`` over the fine trajectory's bands, and ``predict``.

    :param nt, nx: the coarse size (the fine trajectory is ``2nt x 2nx``).
    ``coarse`` and ``f`` are ``(B, nt, nx)`` in physical units (``f``: the forcing on the coarse grid).
    """

    def __init__(self, nt: int = 32, nx: int = 64, wavelet: str = "bior2.4", channels: Sequence[int] = (32, 64, 64),
                 blocks: int = 1, emb_dim: int = 64, residual: bool = True):
        super().__init__()
        self.config = dict(nt=nt, nx=nx, wavelet=wavelet, channels=list(channels), blocks=blocks, emb_dim=emb_dim,
                           residual=bool(residual))
        self.nt, self.nx, self.residual = nt, nx, bool(residual)
        self.codec_u = TrajectoryCodec(1, "wavelet", wavelet)
        self.cond_scaler = BandScaler(2)
        self.x_shape = (4, nt, nx)
        self.net = UNet(in_channels=4 + 2, out_channels=4, channels=channels, blocks=blocks, attention=(), emb_dim=emb_dim)
        self.sigma_data = 1.0

    def fit_scaling(self, u_fine: torch.Tensor, f_fine: torch.Tensor) -> "WaveletSR":
        """Fit the band and condition scalings on fine training trajectories and forcings ``(B, 2nt, 2nx)``."""
        self.codec_u.fit(self._target(u_fine)[:, None])
        self.cond_scaler.fit(torch.stack([coarsen(u_fine), coarsen(f_fine)], 1).double())
        return self

    def _target(self, u_fine: torch.Tensor) -> torch.Tensor:
        """What the bands encode: the fine trajectory, or its residual over the interpolated nested coarse one."""
        return u_fine - interpolate(coarsen(u_fine)) if self.residual else u_fine

    def encode(self, u_fine: torch.Tensor) -> torch.Tensor:
        """The scaled bands of a fine trajectory ``(B, 2nt, 2nx)`` (its own nested points as the coarse one)."""
        check_shape("u", u_fine, (None, 2 * self.nt, 2 * self.nx))
        return self.codec_u.encode(self._target(u_fine)[:, None])

    def decode(self, x: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        """The fine trajectory of bands ``x``; ``coarse`` ``(B, nt, nx)`` is required with ``residual=True``."""
        u = self.codec_u.decode(x)[:, 0]
        if not self.residual:
            return u
        if coarse is None:
            raise ValueError("WaveletSR.decode: a residual model needs coarse= (the coarse trajectory it refines)")
        return u + interpolate(coarse.to(u))

    def condition(self, batch: int, coarse: torch.Tensor, f: torch.Tensor, dtype=torch.float32, device=None) -> torch.Tensor:
        """The scaled condition channels ``(B, 2, nt, nx)``."""
        for name, v in (("coarse", coarse), ("f", f)):
            check_floating(name, v)
            check_shape(name, v, (batch, self.nt, self.nx))
            check_finite(name, v)
        return self.cond_scaler(torch.stack([coarse, f], 1).to(dtype=dtype, device=device))

    def forward(self, x: torch.Tensor, sigma, coarse: torch.Tensor | None = None, f: torch.Tensor | None = None,
                known=None) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected (B, {', '.join(map(str, self.x_shape))}), got shape {tuple(x.shape)}")
        s = expand_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"sigma: expected > 0, got min {float(s.min())}")
        k = known[0] if isinstance(known, tuple) else known
        if k is None:
            if coarse is None or f is None:
                raise ValueError("WaveletSR: pass coarse= and f= (the coarse trajectory and forcing), or known=")
            k = self.condition(x.shape[0], coarse, f, x.dtype, x.device)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        dtype = next(self.net.parameters()).dtype
        F_x = self.net(torch.cat([c_in * x, k.to(x)], 1).to(dtype), c_noise.reshape(-1).to(dtype)).to(x.dtype)
        return c_skip * x + c_out * F_x

    @torch.no_grad()
    def predict(self, coarse: torch.Tensor, f: torch.Tensor, steps: int = 30, method: str = "dpmpp_2m",
                sigma_min: float = 0.002, sigma_max: float = 40.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fine trajectories ``(B, 2nt, 2nx)`` given coarse ones and the coarse forcing ``(B, nt, nx)``."""
        B = coarse.shape[0]
        known = self.condition(B, coarse, f, coarse.dtype, coarse.device)
        x = generate(_Bound(self, known), (B, *self.x_shape), {}, steps, method, sigma_min, sigma_max, generator,
                     dtype=coarse.dtype, device=coarse.device)
        return self.decode(x, coarse)


class _Bound(nn.Module):
    def __init__(self, model: WaveletSR, known: torch.Tensor):
        super().__init__()
        self.model, self.known = model, known

    def forward(self, x, sigma):
        return self.model(x, sigma, known=self.known)
