r"""WDNO: diffusion over whole trajectories in the wavelet domain, conditioned on :math:`u_0` and :math:`f`.

Following Hu et al., "Wavelet Diffusion Neural Operator" (ICLR 2025): the trajectory
:math:`u(t, x)` (``T x N``) is mapped by a one-level periodised 2D DWT over (t, x) to four bands
stacked as channels (:class:`~invdiff.surrogates.wavelet.DWT2`), each band scaled to zero mean
and unit variance (:class:`~invdiff.surrogates.wavelet.BandScaler`), and a 2D U-Net learns the
denoiser of those coefficients. The condition (initial state :math:`u_0`, repeated over time,
and the forcing :math:`f(t, x)`) is transformed the same way; its channels are *known*. The
paper's inpainting-style conditioning overwrites the known channels of the noisy state
:math:`x_t` with their clean values in training and at every sampling step:

.. math::
    \tilde x_t = m \odot c + (1 - m) \odot x_t, \qquad
    D(x, \sigma \mid c) = c_{skip}\, x + c_{out}\, F\big([c_{in}\, x,\ m \odot c,\ m],\ c_{noise}\big),

with :math:`m` the mask of known channels (:func:`overwrite`). The network therefore always
sees the clean condition channels; the sampler state is only the unknown :math:`u` channels, so
the conditional prior has the interface ``D(x, sigma, u0=..., f=...)`` of invdiff's priors
(EDM preconditioning, Karras et al. 2022, with :math:`\sigma_d = 1` after band scaling). The
:math:`u_0` condition is dropped at random in training (``p_uncond``), so the same network is
also the prior :math:`p(u \mid f)` of trajectories with unknown initial state used by the PDE
inverse problems (``u0=None``).

With ``domain="physical"`` the same model runs on the scaled physical trajectory (one channel):
the physical-domain diffusion baseline at the same budget.

>>> import torch
>>> model = WDNO(nt=8, nx=16, channels=(16, 32))
>>> u0, f = torch.zeros(2, 16), torch.zeros(2, 8, 16)
>>> model.predict(u0, f, steps=4, generator=torch.Generator().manual_seed(0)).shape
torch.Size([2, 8, 16])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from invdiff.diffusion.denoiser import expand_sigma
from invdiff.diffusion.edm import edm_coefficients
from invdiff.diffusion.networks import UNet
from invdiff.diffusion.schedules import karras_sigmas
from invdiff.diffusion.solvers import sample
from invdiff.surrogates.wavelet import DWT2, BandScaler
from invdiff.utils.checks import check_finite, check_floating, check_shape
from invdiff.utils.random import randn

__all__ = ["WDNO", "TrajectoryCodec", "overwrite", "generate"]


def overwrite(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Inpainting-style conditioning: :math:`m \odot c + (1 - m) \odot x` (known channels exact).

    ``mask`` broadcasts against ``x`` (e.g. ``(B, C, 1, 1)`` per channel) and holds 0 or 1.

    >>> overwrite(torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[1.0, 0.0]]))
    tensor([[1., 0.]])
    """
    if x.shape != known.shape:
        raise ValueError(f"overwrite: known values must have the shape of x {tuple(x.shape)}, got {tuple(known.shape)}")
    return torch.where(mask.to(torch.bool), known, x)


class TrajectoryCodec(nn.Module):
    """Physical trajectories ``(B, C, T, N)`` <-> scaled model coordinates.

    ``domain="wavelet"``: one-level DWT, bands as channels, per-band scaling: ``(B, 4C, T/2, N/2)``.
    ``domain="physical"``: per-channel scaling only: ``(B, C, T, N)``.
    """

    def __init__(self, channels: int, domain: str = "wavelet", wavelet: str = "bior2.4"):
        super().__init__()
        if domain not in ("wavelet", "physical"):
            raise ValueError(f"domain: expected 'wavelet' or 'physical', got {domain!r}")
        self.domain, self.wavelet = domain, wavelet
        self.dwt = DWT2(wavelet) if domain == "wavelet" else None
        self.scaler = BandScaler(channels * (4 if self.dwt is not None else 1))

    def shape(self, nt: int, nx: int) -> tuple[int, int]:
        return (nt // 2, nx // 2) if self.dwt is not None else (nt, nx)

    def _raw(self, u: torch.Tensor) -> torch.Tensor:
        return self.dwt(u) if self.dwt is not None else u

    def fit(self, u: torch.Tensor) -> "TrajectoryCodec":
        self.scaler.fit(self._raw(u.double()))
        return self

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        return self.scaler(self._raw(u))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c = self.scaler.inverse(z)
        return self.dwt.inverse(c) if self.dwt is not None else c


class WDNO(nn.Module):
    r"""Conditional trajectory prior ``D(x, sigma, u0=None, f=None)`` and surrogate ``predict(u0, f)``.

    :param nt, nx: trajectory size (frames, grid points), even (wavelet) and divisible by the U-Net's pooling.
    :param domain: ``"wavelet"`` (WDNO) or ``"physical"`` (the baseline).
    :param wavelet: PyWavelets name (``"bior2.4"`` as the paper, ``"haar"``).
    :param channels, blocks, emb_dim: the :class:`~invdiff.diffusion.networks.UNet` widths.

    ``x`` is the scaled coefficient state ``(B, *x_shape)``; ``u0`` is ``(B, nx)`` and ``f``
    ``(B, nt, nx)`` in physical units (either may be ``None``: its channels are masked out).
    """

    def __init__(self, nt: int = 32, nx: int = 64, domain: str = "wavelet", wavelet: str = "bior2.4",
                 channels: Sequence[int] = (32, 64, 64), blocks: int = 1, emb_dim: int = 64):
        super().__init__()
        self.config = dict(nt=nt, nx=nx, domain=domain, wavelet=wavelet, channels=list(channels), blocks=blocks, emb_dim=emb_dim)
        self.nt, self.nx = nt, nx
        self.codec_u = TrajectoryCodec(1, domain, wavelet)
        self.codec_c = TrajectoryCodec(2, domain, wavelet)  # (u0 repeated over t, f)
        cu = 4 if domain == "wavelet" else 1
        self.x_shape = (cu, *self.codec_u.shape(nt, nx))
        self.net = UNet(in_channels=3 * cu + 2, out_channels=cu, channels=channels, blocks=blocks, attention=(), emb_dim=emb_dim)
        self.sigma_data = 1.0

    # -- data <-> coordinates --------------------------------------------------------------
    def fit_scaling(self, u: torch.Tensor, u0: torch.Tensor, f: torch.Tensor) -> "WDNO":
        """Fit the per-band scalings on training trajectories ``u``, ``u0``, ``f`` (physical units)."""
        self.codec_u.fit(u[:, None])
        self.codec_c.fit(self._cond_fields(u0, f, u.shape[0], u.dtype, u.device)[0])
        return self

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """Physical ``(B, nt, nx)`` -> state ``(B, *x_shape)``."""
        check_shape("u", u, (None, self.nt, self.nx))
        return self.codec_u.encode(u[:, None])

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """State ``(B, *x_shape)`` -> physical ``(B, nt, nx)``."""
        return self.codec_u.decode(x)[:, 0]

    def _cond_fields(self, u0, f, batch, dtype, device):
        fields, flags = [], []
        for name, v, shape in (("u0", u0, (None, self.nx)), ("f", f, (None, self.nt, self.nx))):
            if v is None:
                fields.append(torch.zeros(batch, self.nt, self.nx, dtype=dtype, device=device))
                flags.append(0.0)
                continue
            check_floating(name, v)
            check_shape(name, v, shape)
            if v.shape[0] != batch:
                raise ValueError(f"{name}: expected batch {batch} (as x), got {v.shape[0]}")
            check_finite(name, v)
            v = v.to(dtype=dtype, device=device)
            fields.append(v[:, None].expand(-1, self.nt, -1) if name == "u0" else v)
            flags.append(1.0)
        return torch.stack(fields, 1), flags

    def condition(self, batch: int, u0=None, f=None, dtype=torch.float32, device=None):
        """The known channels ``m * c`` and the mask channels ``m`` ``(B, 2, *grid)`` of a condition."""
        fields, flags = self._cond_fields(u0, f, batch, dtype, device)
        c = self.codec_c.encode(fields)
        per = c.shape[1] // 2
        m = torch.tensor(flags, dtype=dtype, device=device).repeat_interleave(per).reshape(1, -1, 1, 1)
        known = overwrite(torch.zeros_like(c), c, m.expand_as(c))
        maskch = torch.tensor(flags, dtype=dtype, device=device).reshape(1, 2, 1, 1).expand(batch, 2, *c.shape[-2:])
        return known, maskch

    # -- the prior -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, u0: torch.Tensor | None = None,
                f: torch.Tensor | None = None, known: tuple | None = None) -> torch.Tensor:
        """``D(x, sigma | u0, f)``; ``known`` (from :meth:`condition`) skips re-encoding the condition."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected (B, {', '.join(map(str, self.x_shape))}), got shape {tuple(x.shape)}")
        s = expand_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"sigma: expected > 0, got min {float(s.min())}")
        k, m = known if known is not None else self.condition(x.shape[0], u0, f, x.dtype, x.device)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        dtype = next(self.net.parameters()).dtype
        inp = torch.cat([c_in * x, k.to(x), m.to(x)], 1).to(dtype)
        F_x = self.net(inp, c_noise.reshape(-1).to(dtype)).to(x.dtype)
        return c_skip * x + c_out * F_x

    # -- the surrogate ---------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, u0: torch.Tensor, f: torch.Tensor | None = None, steps: int = 30, method: str = "dpmpp_2m",
                sigma_min: float = 0.002, sigma_max: float = 40.0, n_samples: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample trajectories ``(B, nt, nx)`` (``(n_samples, B, nt, nx)`` if ``n_samples > 1``)
        given ``u0`` ``(B, nx)`` and ``f`` ``(B, nt, nx)``; frame 0 is set to ``u0`` exactly."""
        check_floating("u0", u0)
        check_shape("u0", u0, (None, self.nx))
        B = u0.shape[0]
        u0r = u0.repeat(n_samples, 1)
        fr = None if f is None else f.repeat(n_samples, 1, 1)
        x = generate(self, (n_samples * B, *self.x_shape), dict(u0=u0r, f=fr), steps, method, sigma_min, sigma_max,
                     generator, dtype=u0.dtype, device=u0.device)
        u = self.decode(x)
        u = torch.cat([u0r[:, None], u[:, 1:]], 1)
        return u if n_samples == 1 else u.reshape(n_samples, B, self.nt, self.nx)


def generate(prior, shape: Sequence[int], cond: dict, steps: int = 30, method: str = "dpmpp_2m",
             sigma_min: float = 0.002, sigma_max: float = 40.0, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    r"""Solve the probability-flow ODE of a conditional prior ``D(x, sigma, **cond)`` from pure noise.

    :math:`x_0 \sim \mathcal N(0, \sigma_{max}^2 I)`, then ``steps`` steps of ``method`` (any of
    :func:`invdiff.diffusion.solvers.make_solver`) on Karras levels (:math:`\rho = 7`), the
    condition passed to every denoiser call. Returns the state at :math:`\sigma = 0`.
    """
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    known = prior.condition(shape[0], dtype=dtype, device=device, **cond) if hasattr(prior, "condition") else None
    kw = dict(known=known) if known is not None else cond
    sigmas = karras_sigmas(steps, sigma_min, sigma_max)
    x = sigma_max * randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return sample(lambda z, s: prior(z, s, **kw), x, sigmas, method=method).x
