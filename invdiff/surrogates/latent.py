r"""Latent diffusion surrogate (Text2PDE-style): an autoencoder of trajectories and a conditional diffusion model on its latent grid.

Following Zhou et al., "Text2PDE: Latent Diffusion Models for Accessible Physics Simulation"
(ICLR 2025), in a small form for the periodic Burgers set-up (:mod:`invdiff.surrogates.data_periodic`):

1. :class:`TrajectoryAutoencoder`: convolutions over (t, x) (circular in x, zero-padded in t),
   two stride-2 stages, compress the scaled trajectory :math:`u/s_u` ``(nt, nx)`` to a latent
   grid :math:`z = E(u)` ``(C, nt/4, nx/4)`` (``C = 4``: 4x fewer numbers) and back,
   :math:`\hat u = \mathcal D(z)`; trained on :math:`\|\mathcal D(E(u)) - u\|^2`. Its
   reconstruction error is the floor of the latent model.
2. A conditional denoiser on the standardised latent :math:`\tilde z = (z - \mu_z)/s_z` (per
   channel, from the training latents), EDM-preconditioned (:math:`\sigma_d = 1`):

   .. math::
       D(\tilde z, \sigma \mid u_0, \nu) = c_{skip}\,\tilde z + c_{out}\, F\big([c_{in}\tilde z,\ U(u_0),\ P(\nu)],\ c_{noise}\big),

   with :math:`U(u_0)` the initial state rearranged losslessly to the latent resolution
   (``nx`` points -> ``nx/4`` positions x 4 channels, channel :math:`j` at position :math:`i` is
   :math:`u_0(x_{4i+j})/s_u`) and repeated over latent time, and :math:`P(\nu)` the
   parameter embedding (:class:`ParameterEmbedding`) as constant channels. :math:`F` is invdiff's
   :class:`~invdiff.diffusion.networks.UNet`. This is the conditional prior interface
   ``D(x, sigma, u0=..., nu=...)`` (or ``text=...``) of invdiff.
3. :meth:`LatentSurrogate.predict` samples :math:`\tilde z` with the diffusion core
   (:func:`invdiff.surrogates.wdno.generate`: Karras levels, DPM-Solver++(2M) or DDIM, a few tens
   of steps), decodes, and **enforces the initial condition by replacing frame 0 with**
   :math:`u_0` (exact; the decoder is not conditioned on :math:`u_0`).

Text-like conditioning (:func:`parse_parameters`): a parameter string such as
``"burgers periodic nu=0.012"`` is split on whitespace into word tokens from a fixed vocabulary
(PDE name, boundary condition) and ``key=value`` numbers (``nu``). Word tokens are embedded by a
learned table, ``nu`` by Fourier features of its normalised :math:`\log_{10}`; the sum goes
through a small MLP. A numeric ``nu=`` is turned into the same tokens, so both routes give
the same embedding. There is no language model: with one PDE and one boundary condition in the
training data the word tokens add a constant vector, and the only information the string carries
is :math:`\nu`. Unknown words, missing or repeated keys and viscosities outside the trained
range are refused with a clear error.

>>> import torch
>>> model = LatentSurrogate(nt=8, nx=16, latent_channels=2, ae_channels=(8, 8), channels=(16, 16))
>>> u0 = torch.zeros(2, 16)
>>> model.predict(u0, text="burgers periodic nu=0.01", steps=2, generator=torch.Generator().manual_seed(0)).shape
torch.Size([2, 8, 16])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from invdiff.diffusion.denoiser import expand_sigma
from invdiff.diffusion.edm import edm_coefficients
from invdiff.diffusion.networks import UNet
from invdiff.surrogates.wdno import generate
from invdiff.utils.checks import check_finite, check_floating, check_shape

__all__ = ["VOCABULARY", "parse_parameters", "ParameterEmbedding", "TrajectoryAutoencoder", "LatentSurrogate"]

#: Word tokens by slot; the string must name one word of each slot. ``key=value`` numbers: ``nu``.
VOCABULARY = {"pde": ("burgers",), "boundary": ("periodic",)}
_WORDS = [w for slot in VOCABULARY.values() for w in slot]
_KEYS = ("nu",)


def parse_parameters(text: str) -> dict:
    """Parse a parameter string into its word tokens and numbers.

    Grammar: whitespace-separated tokens, case-insensitive; each token is either a word of
    :data:`VOCABULARY` (exactly one per slot: ``pde``, ``boundary``) or ``nu=<float>`` with a
    finite positive value (exactly once). Anything else raises ``ValueError`` saying why.

    >>> parse_parameters("Burgers periodic nu=1.2e-2")
    {'pde': 'burgers', 'boundary': 'periodic', 'nu': 0.012}
    >>> parse_parameters("burgers nu=0.01")
    Traceback (most recent call last):
    ...
    ValueError: parameter string 'burgers nu=0.01': missing the boundary word (one of: periodic)
    """
    if not isinstance(text, str):
        raise TypeError(f"parameter string: expected str, got {type(text).__name__}")
    out: dict = {}
    for tok in text.lower().split():
        if "=" in tok:
            key, _, val = tok.partition("=")
            if key not in _KEYS:
                raise ValueError(f"parameter string {text!r}: unknown key {key!r} (known: {', '.join(_KEYS)})")
            if key in out:
                raise ValueError(f"parameter string {text!r}: {key} given twice")
            try:
                num = float(val)
            except ValueError:
                raise ValueError(f"parameter string {text!r}: {key}={val!r} is not a number") from None
            if not math.isfinite(num) or num <= 0:
                raise ValueError(f"parameter string {text!r}: expected a finite {key} > 0, got {val}")
            out[key] = num
            continue
        slot = next((s for s, words in VOCABULARY.items() if tok in words), None)
        if slot is None:
            raise ValueError(f"parameter string {text!r}: unknown word {tok!r} (known: {', '.join(_WORDS)}, nu=<value>)")
        if slot in out:
            raise ValueError(f"parameter string {text!r}: two {slot} words ({out[slot]!r}, {tok!r})")
        out[slot] = tok
    for slot, words in VOCABULARY.items():
        if slot not in out:
            raise ValueError(f"parameter string {text!r}: missing the {slot} word (one of: {', '.join(words)})")
    for key in _KEYS:
        if key not in out:
            raise ValueError(f"parameter string {text!r}: missing {key}=<value>")
    return {k: out[k] for k in (*VOCABULARY, *_KEYS)}


class ParameterEmbedding(nn.Module):
    r"""Embedding of the parsed parameters: :math:`e = \mathrm{MLP}\big(\sum_w E[w] + W\phi(s)\big)`,
    :math:`s = 2(\log_{10}\nu - a)/(b - a) - 1` over the trained range :math:`[10^a, 10^b]`,
    :math:`\phi(s) = (s, \sin \pi k s, \cos \pi k s)_{k=1..3}`."""

    def __init__(self, dim: int, log10_nu: Sequence[float]):
        super().__init__()
        self.words = nn.Embedding(len(_WORDS), dim)
        self.num = nn.Linear(7, dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))
        self.register_buffer("log10_nu", torch.tensor([float(v) for v in log10_nu]))

    def check_nu(self, nu: torch.Tensor) -> None:
        lo, hi = (10 ** float(v) for v in self.log10_nu)
        bad = (nu < lo * (1 - 1e-3)) | (nu > hi * (1 + 1e-3))
        if bool(bad.any()):
            raise ValueError(f"nu: the model was trained on [{lo:.4g}, {hi:.4g}], got {nu[bad].tolist()}")

    def forward(self, nu: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """``nu`` ``(B,)``, ``words`` ``(B, n_slots)`` token ids -> ``(B, dim)``."""
        a, b = self.log10_nu[0], self.log10_nu[1]
        s = (2 * (torch.log10(nu.to(self.log10_nu)) - a) / (b - a).clamp_min(1e-12) - 1)[:, None]
        k = math.pi * torch.arange(1, 4, dtype=s.dtype, device=s.device)
        feats = torch.cat([s, torch.sin(k * s), torch.cos(k * s)], 1)
        dtype = self.num.weight.dtype
        return self.mlp(self.words(words).sum(1) + self.num(feats.to(dtype)))


def _pad(h: torch.Tensor) -> torch.Tensor:
    """Pad (t, x) by one: circular in x (periodic domain), zeros in t."""
    return F.pad(F.pad(h, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1))


class _Conv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(cin, cout, 3, stride=stride, padding=0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad(h))


class TrajectoryAutoencoder(nn.Module):
    """``encode(u)`` ``(B, nt, nx)`` -> ``(B, C, nt/4, nx/4)`` and ``decode(z)`` back; ``u`` in physical units
    (scaled by the buffer ``u_scale``, set from the training data)."""

    def __init__(self, latent_channels: int = 4, channels: Sequence[int] = (32, 64)):
        super().__init__()
        c1, c2 = channels
        self.enc = nn.Sequential(_Conv(1, c1), nn.GELU(), _Conv(c1, c1, 2), nn.GELU(), _Conv(c1, c2), nn.GELU(),
                                 _Conv(c2, c2, 2), nn.GELU(), _Conv(c2, c2), nn.GELU(), nn.Conv2d(c2, latent_channels, 1))
        self.dec = nn.Sequential(nn.Conv2d(latent_channels, c2, 1), nn.GELU(), _Conv(c2, c2), nn.GELU(),
                                 nn.Upsample(scale_factor=2.0), _Conv(c2, c2), nn.GELU(), _Conv(c2, c1), nn.GELU(),
                                 nn.Upsample(scale_factor=2.0), _Conv(c1, c1), nn.GELU(), _Conv(c1, c1), nn.GELU(), nn.Conv2d(c1, 1, 1))
        self.register_buffer("u_scale", torch.ones(()))

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        check_floating("u", u)
        if u.ndim != 3 or u.shape[1] % 4 or u.shape[2] % 4:
            raise ValueError(f"u: expected (B, nt, nx) with nt and nx divisible by 4, got shape {tuple(u.shape)}")
        dtype = self.enc[0].weight.dtype
        return self.enc((u / self.u_scale)[:, None].to(dtype)).to(u.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        dtype = self.dec[0].weight.dtype
        return (self.dec(z.to(dtype))[:, 0] * self.u_scale).to(z.dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """The reconstruction :math:`\\mathcal D(E(u))`."""
        return self.decode(self.encode(u))


class LatentSurrogate(nn.Module):
    r"""The autoencoder, the parameter embedding and the latent denoiser ``D(z, sigma, u0=, nu=|text=)``.

    :param nt, nx: trajectory size, divisible by 4 (latent grid ``nt/4 x nx/4``, which the U-Net
        halves ``len(channels) - 1`` times).
    :param latent_channels, ae_channels: autoencoder widths.
    :param channels, blocks, emb_dim: the latent :class:`~invdiff.diffusion.networks.UNet`.
    :param param_dim: channels of the parameter embedding.
    :param log10_nu: the trained viscosity range (``nu`` outside it is refused).
    """

    def __init__(self, nt: int = 32, nx: int = 64, latent_channels: int = 4, ae_channels: Sequence[int] = (32, 64),
                 channels: Sequence[int] = (64, 128), blocks: int = 1, emb_dim: int = 64, param_dim: int = 8,
                 log10_nu: Sequence[float] = (-2.5, -1.5)):
        super().__init__()
        if nt % 4 or nx % 4:
            raise ValueError(f"nt, nx: expected multiples of 4, got {nt}, {nx}")
        self.config = dict(nt=nt, nx=nx, latent_channels=latent_channels, ae_channels=list(ae_channels), channels=list(channels),
                           blocks=blocks, emb_dim=emb_dim, param_dim=param_dim, log10_nu=list(log10_nu))
        self.nt, self.nx = nt, nx
        self.ae = TrajectoryAutoencoder(latent_channels, ae_channels)
        self.params = ParameterEmbedding(param_dim, log10_nu)
        self.x_shape = (latent_channels, nt // 4, nx // 4)
        self.net = UNet(in_channels=latent_channels + 4 + param_dim, out_channels=latent_channels, channels=channels,
                        blocks=blocks, attention=(), emb_dim=emb_dim)
        self.register_buffer("z_mean", torch.zeros(latent_channels))
        self.register_buffer("z_std", torch.ones(latent_channels))
        self.sigma_data = 1.0

    # -- latent coordinates ----------------------------------------------------------------
    def fit_latent_scaling(self, z: torch.Tensor) -> "LatentSurrogate":
        """Per-channel mean and standard deviation of training latents ``(N, C, h, w)``."""
        self.z_mean.copy_(z.double().mean((0, 2, 3)))
        self.z_std.copy_(z.double().std((0, 2, 3)))
        return self

    def to_latent(self, u: torch.Tensor) -> torch.Tensor:
        """Physical ``(B, nt, nx)`` -> standardised latent ``(B, *x_shape)``."""
        check_shape("u", u, (None, self.nt, self.nx))
        z = self.ae.encode(u)
        return (z - self.z_mean.reshape(1, -1, 1, 1).to(z)) / self.z_std.reshape(1, -1, 1, 1).to(z)

    def from_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised latent -> physical ``(B, nt, nx)`` (the decoder; frame 0 not enforced)."""
        z = x * self.z_std.reshape(1, -1, 1, 1).to(x) + self.z_mean.reshape(1, -1, 1, 1).to(x)
        return self.ae.decode(z)

    # -- conditions ------------------------------------------------------------------------
    def parameters_of(self, batch: int, nu=None, text=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(nu (B,), word ids (B, 2))`` from a numeric ``nu`` (float or ``(B,)``) or a parameter string
        (one for all, or a list of ``B``); exactly one of the two."""
        if (nu is None) == (text is None):
            raise ValueError("give the PDE parameters either as nu=... or as text=... (exactly one)")
        if text is not None:
            texts = [text] * batch if isinstance(text, str) else list(text)
            if len(texts) != batch:
                raise ValueError(f"text: expected one string or {batch} strings, got {len(texts)}")
            parsed = [parse_parameters(s) for s in texts]
            nu_t = torch.tensor([p["nu"] for p in parsed], dtype=torch.float64, device=device)
            words = [[_WORDS.index(p[slot]) for slot in VOCABULARY] for p in parsed]
        else:
            nu_t = torch.as_tensor(nu, dtype=torch.float64, device=device).reshape(-1)
            if nu_t.numel() == 1:
                nu_t = nu_t.expand(batch)
            if nu_t.numel() != batch:
                raise ValueError(f"nu: expected a float or shape ({batch},), got {tuple(torch.as_tensor(nu).shape)}")
            if not bool(torch.isfinite(nu_t).all()) or bool((nu_t <= 0).any()):
                raise ValueError(f"nu: expected finite values > 0, got {nu_t.tolist()}")
            words = [[_WORDS.index(VOCABULARY[slot][0]) for slot in VOCABULARY]] * batch  # the canonical words
        self.params.check_nu(nu_t.to(self.z_mean.device))
        return nu_t, torch.tensor(words, dtype=torch.long, device=device)

    def condition(self, batch: int, u0: torch.Tensor | None = None, nu=None, text=None, dtype=torch.float32, device=None) -> torch.Tensor:
        """The condition channels ``(B, 4 + param_dim, nt/4, nx/4)``: :math:`U(u_0)` and :math:`P(\\nu)`."""
        if u0 is None:
            raise ValueError("u0: the latent surrogate needs the initial state (B, nx)")
        check_floating("u0", u0)
        check_shape("u0", u0, (None, self.nx))
        check_finite("u0", u0)
        if u0.shape[0] != batch:
            raise ValueError(f"u0: expected batch {batch}, got {u0.shape[0]}")
        h, w = self.x_shape[1:]
        u0s = u0.to(dtype=dtype, device=device) / self.ae.u_scale.to(dtype=dtype, device=device)
        U = u0s.reshape(batch, w, 4).transpose(1, 2)[:, :, None]  # (B, 4, 1, nx/4): channel j, position i = u0[4i + j]
        nu_t, words = self.parameters_of(batch, nu, text, device)
        P = self.params(nu_t.to(device), words).to(dtype)
        return torch.cat([U.expand(-1, -1, h, -1), P[:, :, None, None].expand(-1, -1, h, w)], 1)

    # -- the prior ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor, u0: torch.Tensor | None = None, nu=None, text=None,
                known: torch.Tensor | None = None) -> torch.Tensor:
        """``D(x, sigma | u0, nu)`` on the standardised latent; ``known`` (from :meth:`condition`) skips re-embedding."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected (B, {', '.join(map(str, self.x_shape))}), got shape {tuple(x.shape)}")
        s = expand_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"sigma: expected > 0, got min {float(s.min())}")
        c = known if known is not None else self.condition(x.shape[0], u0, nu, text, x.dtype, x.device)
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        dtype = next(self.net.parameters()).dtype
        F_x = self.net(torch.cat([c_in * x, c.to(x)], 1).to(dtype), c_noise.reshape(-1).to(dtype)).to(x.dtype)
        return c_skip * x + c_out * F_x

    # -- the surrogate -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, u0: torch.Tensor, nu=None, text=None, steps: int = 20, method: str = "dpmpp_2m",
                sigma_min: float = 0.002, sigma_max: float = 40.0, n_samples: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample trajectories ``(B, nt, nx)`` (``(n_samples, B, nt, nx)`` if ``n_samples > 1``) given
        ``u0`` ``(B, nx)`` and ``nu`` or ``text``; frame 0 is replaced by ``u0`` (exact)."""
        check_floating("u0", u0)
        check_shape("u0", u0, (None, self.nx))
        B = u0.shape[0]
        u0r = u0.repeat(n_samples, 1)
        known = self.condition(B, u0, nu, text, u0.dtype, u0.device).repeat(n_samples, 1, 1, 1)
        x = generate(lambda z, s: self(z, s, known=known), (n_samples * B, *self.x_shape), {}, steps, method,
                     sigma_min, sigma_max, generator, dtype=u0.dtype, device=u0.device)
        u = self.from_latent(x)
        u = torch.cat([u0r[:, None], u[:, 1:]], 1)
        return u if n_samples == 1 else u.reshape(n_samples, B, self.nt, self.nx)
