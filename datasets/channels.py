r"""HPSM near-field channels for array-of-subarrays (AoSA) ultra-massive MIMO.

The hybrid spherical- and planar-wave model (HPSM) of Yan, Chen, Han and Yuan (widely-spaced
multi-subarray THz UM-MIMO) and Chen et al. (TWC 2023), used by DiffPace (Hu, Han, Gerstacker,
Schober 2025) to train its diffusion prior: each array is ``K`` uniform linear subarrays of
``n`` antennas; wavefronts are *planar within a subarray* and *spherical across subarrays*
(every subarray pair has its own distance, angles and phase from the geometry of the subarray
centres). Line of sight (LoS) plus ``L`` single-bounce scattered paths:

.. math::
    H_{k_r k_t} = \sum_{p=0}^{L} \alpha_p^{k_r k_t}\, e^{-j 2\pi d_p^{k_r k_t}/\lambda}\,
    a_{n_r}(\mu_{r,p}^{k_r k_t})\, a_{n_t}(\mu_{t,p}^{k_r k_t})^{T},
    \qquad [a_n(\mu)]_i = e^{j \frac{2\pi}{\lambda} u_i \mu},\;
    u_i = (i - \tfrac{n-1}{2})\,\delta,

with :math:`\mu = \sin\theta` the direction cosine of the path along the subarray axis seen from
the subarray centre, :math:`d_p` the path length between the two subarray centres (via the
scatterer for :math:`p \ge 1`), :math:`\alpha_0 = \frac{\lambda}{4\pi d_0} e^{-\kappa d_0 / 2}`
(free space and molecular absorption :math:`\kappa`) and
:math:`\alpha_p = \Gamma_p \frac{\lambda}{4\pi d_p} e^{-\kappa d_p/2}`, :math:`\Gamma_p` a complex
reflection coefficient of random phase and a reflection loss drawn in the preset's range.
Each channel is scaled to :math:`\|H\|_F^2 = N_r N_t` (so :math:`\mathbb E\|H\|_F^2 = N_r N_t`).

Special cases (``model=``): ``"planar"`` (far field: one subarray spanning the whole array,
one angle per path) and ``"spherical"`` (exact per-antenna distances and amplitudes, i.e. HPSM
with subarrays of one antenna). Equations, defaults and sources: ``datasets/channels_hpsm.md``.

>>> import torch
>>> H = hpsm_channels(4, generator=torch.Generator().manual_seed(0))
>>> H.shape, float((H ** 2).sum((1, 2, 3)).mean())        # (B, 2, Nr, Nt), E||H||^2 = 256
(torch.Size([4, 2, 16, 16]), 256.0)
"""
from __future__ import annotations

import dataclasses
import math

import torch

from invdiff.operators.complex import to_channels, to_complex  # noqa: F401  (to_complex: re-exported)
from invdiff.utils.random import rand

__all__ = ["HPSMConfig", "PRESETS", "hpsm_channels", "make_generator", "steering_vector", "to_complex", "to_real"]

C_LIGHT = 299_792_458.0

#: Scenario presets (every value in the data card with its source).
PRESETS: dict[str, dict] = {
    # 60 GHz: lambda = 5 mm; 4 x 4 subarrays 8 lambda apart: aperture 26 lambda = 13 cm,
    # Rayleigh distance of the array 2 L^2 / lambda = 6.8 m, of a subarray 4 cm.
    "60ghz": dict(fc=60e9, subarray_spacing=8.0, n_scatter=3, reflection_loss_db=(5.0, 15.0),
                  absorption_db_per_km=15.0, distance=(2.0, 20.0)),
    # 0.3 THz: lambda = 1 mm; widely spaced subarrays (32 lambda): aperture 98 lambda,
    # Rayleigh distance 19 m, of a subarray 8 mm; sparser scattering, higher reflection loss.
    "0.3thz": dict(fc=0.3e12, subarray_spacing=32.0, n_scatter=2, reflection_loss_db=(10.0, 20.0),
                   absorption_db_per_km=10.0, distance=(2.0, 20.0)),
}


@dataclasses.dataclass
class HPSMConfig:
    """Geometry and propagation settings of an HPSM scenario (lengths in metres unless noted).

    ``subarray_spacing`` and ``antenna_spacing`` are in wavelengths (centre to centre).
    Tx at the origin along the y axis (broadside +x); the Rx centre at distance ``R`` and
    azimuth ``psi``, its broadside turned back towards the Tx by ``beta`` off the line of sight.
    """

    fc: float = 60e9
    nr_subarrays: int = 4
    nr_per_subarray: int = 4
    nt_subarrays: int = 4
    nt_per_subarray: int = 4
    antenna_spacing: float = 0.5
    subarray_spacing: float = 8.0
    distance: tuple[float, float] = (2.0, 20.0)
    azimuth_deg: float = 60.0
    rx_tilt_deg: float = 30.0
    n_scatter: int = 3
    scatter_range: tuple[float, float] = (0.3, 1.2)
    reflection_loss_db: tuple[float, float] = (5.0, 15.0)
    absorption_db_per_km: float = 15.0
    los: bool = True
    model: str = "hpsm"
    normalize: str = "sample"

    @classmethod
    def preset(cls, name: str, **overrides) -> "HPSMConfig":
        """The preset ``"60ghz"`` or ``"0.3thz"`` with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown HPSM preset {name!r}; expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def __post_init__(self) -> None:
        for k in ("nr_subarrays", "nr_per_subarray", "nt_subarrays", "nt_per_subarray"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{k}: expected a positive int, got {v!r}")
        if self.fc <= 0 or self.antenna_spacing <= 0:
            raise ValueError(f"fc, antenna_spacing: expected > 0, got {self.fc}, {self.antenna_spacing}")
        if self.subarray_spacing < self.antenna_spacing * max(self.nr_per_subarray, self.nt_per_subarray):
            raise ValueError("subarray_spacing: expected at least antenna_spacing * antennas per subarray "
                             f"(subarrays must not overlap), got {self.subarray_spacing}")
        if not 0 < self.distance[0] <= self.distance[1]:
            raise ValueError(f"distance: expected 0 < min <= max, got {self.distance}")
        if self.model not in ("hpsm", "planar", "spherical"):
            raise ValueError(f"model: expected 'hpsm', 'planar' or 'spherical', got {self.model!r}")
        if self.normalize not in ("sample", "none"):
            raise ValueError(f"normalize: expected 'sample' or 'none', got {self.normalize!r}")
        if self.n_scatter < 0 or (self.n_scatter == 0 and not self.los):
            raise ValueError("expected at least one path (los=True or n_scatter >= 1)")

    @property
    def wavelength(self) -> float:
        return C_LIGHT / self.fc

    @property
    def nr(self) -> int:
        return self.nr_subarrays * self.nr_per_subarray

    @property
    def nt(self) -> int:
        return self.nt_subarrays * self.nt_per_subarray

    def offsets(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Subarray-centre offsets ``(K,)`` and in-subarray antenna offsets ``(n,)`` along the axis (m)."""
        K, n = (self.nr_subarrays, self.nr_per_subarray) if side == "r" else (self.nt_subarrays, self.nt_per_subarray)
        lam = self.wavelength
        v = (torch.arange(K, dtype=torch.float64) - (K - 1) / 2) * self.subarray_spacing * lam
        u = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * self.antenna_spacing * lam
        return v, u


def steering_vector(mu: torch.Tensor, offsets: torch.Tensor, wavelength: float) -> torch.Tensor:
    r"""Planar-wave steering vectors :math:`[a(\mu)]_i = e^{j 2\pi u_i \mu / \lambda}`, shape ``(*mu.shape, n)``."""
    return torch.exp(1j * (2 * math.pi / wavelength) * mu[..., None] * offsets)


def to_real(H: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Complex ``(B, Nr, Nt)`` -> real ``(B, 2, Nr, Nt)`` (real, imag), in ``dtype``
    (:func:`invdiff.operators.complex.to_channels`; ``to_complex`` is the inverse)."""
    return to_channels(H).to(dtype).contiguous()


def _geometry(n: int, cfg: HPSMConfig, generator) -> dict:
    """Random geometry: Rx centre, Rx axis, scatterer positions and reflection coefficients (float64)."""
    u = rand((n, 5 + 4 * cfg.n_scatter), generator=generator, dtype=torch.float64)
    lo, hi = cfg.distance
    R = lo + (hi - lo) * u[:, 0]
    psi = math.radians(cfg.azimuth_deg) * (2 * u[:, 1] - 1)
    beta = math.radians(cfg.rx_tilt_deg) * (2 * u[:, 2] - 1)
    c_r = R[:, None] * torch.stack([psi.cos(), psi.sin()], -1)
    # Rx broadside points back towards the Tx, turned by beta; its axis is the broadside rotated by +90 deg
    e_r = torch.stack([(psi + beta).sin(), -(psi + beta).cos()], -1)
    L = cfg.n_scatter
    v = u[:, 5:].reshape(n, L, 4)
    phi = math.radians(cfg.azimuth_deg) * (2 * v[..., 0] - 1)
    rho = R[:, None] * (cfg.scatter_range[0] + (cfg.scatter_range[1] - cfg.scatter_range[0]) * v[..., 1])
    scat = rho[..., None] * torch.stack([phi.cos(), phi.sin()], -1)  # (n, L, 2)
    lo_db, hi_db = cfg.reflection_loss_db
    loss_db = lo_db + (hi_db - lo_db) * v[..., 2]
    gamma = 10 ** (-loss_db / 20) * torch.exp(2j * math.pi * v[..., 3])
    return dict(R=R, psi=psi, beta=beta, c_r=c_r, e_r=e_r, scatterers=scat, gamma=gamma)


def _paths(geo: dict, cfg: HPSMConfig, centres_r, u_r, centres_t, u_t) -> torch.Tensor:
    r"""Sum over paths of planar blocks between groups of antennas (the HPSM kernel).

    ``centres_r`` (B, Gr, 2) and ``centres_t`` (Gt, 2) are group centres; ``u_r`` (nr,) and
    ``u_t`` (nt,) the antenna offsets within a group along the axes ``e_r`` and ``e_t = (0, 1)``.
    Returns the complex channel (B, Gr*nr, Gt*nt).
    """
    lam, k = cfg.wavelength, 2 * math.pi / cfg.wavelength
    kappa = cfg.absorption_db_per_km / 1000 * math.log(10) / 10  # power attenuation per metre
    e_r, e_t = geo["e_r"], torch.tensor([0.0, 1.0], dtype=torch.float64)
    B, Gr, Gt = centres_r.shape[0], centres_r.shape[1], centres_t.shape[0]
    cr, ct = centres_r[:, :, None, :], centres_t[None, None, :, :]  # (B, Gr, 1, 2), (1, 1, Gt, 2)
    hops = []  # (first point seen from the Tx, last point seen from the Rx, path length, extra gain)
    if cfg.los:
        g = cr - ct
        d = g.norm(dim=-1)
        hops.append((cr.expand(B, Gr, Gt, 2), ct.expand(B, Gr, Gt, 2), d, torch.ones_like(d, dtype=torch.complex128)))
    for p in range(cfg.n_scatter):
        s = geo["scatterers"][:, p, None, None, :]  # (B, 1, 1, 2)
        d = (s - ct).norm(dim=-1) + (cr - s).norm(dim=-1)
        hops.append((s.expand(B, Gr, Gt, 2), s.expand(B, Gr, Gt, 2), d, geo["gamma"][:, p, None, None].expand(B, Gr, Gt)))
    H = 0
    for first, last, d, gain in hops:
        gt = first - ct
        mu_t = (gt @ e_t) / gt.norm(dim=-1)
        gr = last - cr
        mu_r = (gr * e_r[:, None, None, :]).sum(-1) / gr.norm(dim=-1)
        alpha = gain * lam / (4 * math.pi * d) * torch.exp(-kappa * d / 2 - 1j * k * d)
        block = alpha[..., None, None] * steering_vector(mu_r, u_r, lam)[..., :, None] * steering_vector(mu_t, u_t, lam)[..., None, :]
        H = H + block  # (B, Gr, Gt, nr, nt)
    return H.permute(0, 1, 3, 2, 4).reshape(B, Gr * u_r.numel(), Gt * u_t.numel())


def _channels_from_geometry(geo: dict, cfg: HPSMConfig) -> torch.Tensor:
    """Complex channels (B, Nr, Nt) of ``cfg.model`` for a drawn geometry (before normalisation)."""
    v_r, u_r = cfg.offsets("r")
    v_t, u_t = cfg.offsets("t")
    if cfg.model == "planar":  # one group per array: the whole aperture sees one planar wave per path
        off_r = (v_r[:, None] + u_r).reshape(-1)
        off_t = (v_t[:, None] + u_t).reshape(-1)
        cen_r, cen_t = geo["c_r"][:, None, :], torch.zeros(1, 2, dtype=torch.float64)
    elif cfg.model == "hpsm":
        off_r, off_t = u_r, u_t
        cen_r = geo["c_r"][:, None, :] + v_r[None, :, None] * geo["e_r"][:, None, :]
        cen_t = torch.stack([torch.zeros_like(v_t), v_t], -1)
    else:  # spherical: every antenna its own group
        pos_r = (v_r[:, None] + u_r).reshape(-1)
        pos_t = (v_t[:, None] + u_t).reshape(-1)
        off_r = off_t = torch.zeros(1, dtype=torch.float64)
        cen_r = geo["c_r"][:, None, :] + pos_r[None, :, None] * geo["e_r"][:, None, :]
        cen_t = torch.stack([torch.zeros_like(pos_t), pos_t], -1)
    return _paths(geo, cfg, cen_r, off_r, cen_t, off_t)


def hpsm_channels(
    n: int,
    config: HPSMConfig | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
    return_geometry: bool = False,
    **overrides,
):
    r"""``n`` HPSM channels as real tensors ``(n, 2, Nr, Nt)`` (real, imag), seeded by ``generator``.

    ``config`` (default :class:`HPSMConfig` = the 60 GHz preset with 4 x 4 subarrays of 4 x 4
    antennas) may be overridden field by field (``model="planar"``, ``fc=0.3e12``, ...).
    Computed in float64/complex128 and cast to ``dtype``. ``return_geometry=True`` also returns
    the drawn geometry (``R``, ``psi``, ``beta``, ``c_r``, ``e_r``, ``scatterers``, ``gamma``)
    and the normalisation factor per channel (``scale``).

    >>> H = hpsm_channels(2, model="spherical", generator=torch.Generator().manual_seed(1))
    >>> H.shape
    torch.Size([2, 2, 16, 16])
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    cfg = dataclasses.replace(config or HPSMConfig(), **overrides) if overrides else (config or HPSMConfig())
    geo = _geometry(n, cfg, generator)
    H = _channels_from_geometry(geo, cfg)
    if cfg.normalize == "sample":
        scale = math.sqrt(cfg.nr * cfg.nt) / H.flatten(1).norm(dim=1)
    else:
        scale = torch.ones(n, dtype=torch.float64)
    H = H * scale[:, None, None]
    out = to_real(H, dtype).to(device)
    if return_geometry:
        return out, {**geo, "scale": scale}
    return out


def make_generator(name: str = "hpsm", preset: str = "60ghz", **params):
    """``sample(n, generator=None, device=None, dtype=float32)`` of HPSM channels (for training configs).

    ``name`` is ``"hpsm"``; ``preset`` and ``params`` (fields of :class:`HPSMConfig`, lists as
    tuples) are fixed, and recorded in a training card.

    >>> sample = make_generator(preset="0.3thz", nr_subarrays=2)
    >>> sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2, 8, 16])
    """
    if name != "hpsm":
        raise ValueError(f"unknown channel generator {name!r}; expected 'hpsm'")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    cfg = HPSMConfig.preset(preset, **params)

    def sample(n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32):
        return hpsm_channels(n, cfg, generator=generator, device=device, dtype=dtype)

    sample.__name__ = f"hpsm-{preset}-sampler"
    sample.config = cfg
    return sample
