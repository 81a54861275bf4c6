"""Compact noise-conditioned networks: a 2D U-Net, its 1D variant, and an MLP.

Each network is ``net(x, c_noise) -> F`` with ``c_noise`` a ``(B,)`` tensor (EDM uses
``c_noise = log(sigma) / 4``); :class:`invdiff.diffusion.edm.EDMPrecond` turns it into a prior
``D(x, sigma)``. The U-Net follows the DDPM / ADM design (Ho et al. 2020; Dhariwal & Nichol
2021) at a small size: residual blocks with GroupNorm and SiLU, the noise embedding added as a
per-channel scale and shift (``h <- h (1 + s) + b``), optional self-attention at low
resolution, average-pool downsampling and nearest-neighbour upsampling, skip connections by
concatenation. The last convolution is zero-initialised, so an untrained network outputs 0.

>>> import torch
>>> net = UNet(in_channels=1, channels=(16, 32), blocks=1, attention=())
>>> net(torch.zeros(2, 1, 16, 16), torch.zeros(2)).shape
torch.Size([2, 1, 16, 16])
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["UNet", "UNet1D", "MLP", "FourierEmbedding", "build_network", "NETWORKS"]


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample (Vaswani et al. 2017; DDPM), then an MLP.

    .. math:: e(c) = [\\cos(c\\,\\omega_k), \\sin(c\\,\\omega_k)]_{k < d/2}, \\quad
              \\omega_k = 100^{k / (d/2 - 1)}
    """

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim: expected an even embedding size, got {dim}")
        hidden = hidden or 4 * dim
        half = dim // 2
        self.register_buffer("freqs", torch.exp(math.log(100.0) * torch.arange(half) / max(half - 1, 1)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.out_dim = hidden

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        arg = c.reshape(-1, 1).to(self.freqs.dtype) * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1).to(self.mlp[0].weight.dtype))


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, conv: type, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = conv(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        s, b = self.emb(e).reshape(e.shape[0], -1, *([1] * (x.ndim - 2))).chunk(2, dim=1)
        h = self.norm2(h) * (1 + s) + b
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over all positions (any spatial rank), residual."""

    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        self.heads = heads if ch % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, e=None) -> torch.Tensor:
        B, C = x.shape[:2]
        h = self.norm(x).reshape(B, C, -1).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(h).reshape(B, -1, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, -1, C)
        return x + self.proj(o).transpose(1, 2).reshape(x.shape)


class _Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, res: _ResBlock, attn: _Attention | None):
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.res(x, e)
        return self.attn(h) if self.attn is not None else h


class _UNetND(nn.Module):
    """A U-Net over 1 or 2 spatial dimensions (shared code of :class:`UNet` and :class:`UNet1D`)."""

    dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        channels: Sequence[int] = (32, 64, 64),
        blocks: int = 1,
        attention: Sequence[int] = (),
        emb_dim: int = 64,
        dropout: float = 0.0,
        heads: int = 4,
    ):
        super().__init__()
        if in_channels < 1 or not channels or blocks < 1:
            raise ValueError(f"UNet: expected in_channels >= 1, channels non-empty, blocks >= 1; got {in_channels}, {channels}, {blocks}")
        bad = [a for a in attention if not 0 <= a < len(channels)]
        if bad:
            raise ValueError(f"attention: level indices must be in [0, {len(channels)}), got {list(attention)}")
        self.config = dict(
            in_channels=in_channels, out_channels=out_channels or in_channels, channels=list(channels),
            blocks=blocks, attention=list(attention), emb_dim=emb_dim, dropout=dropout, heads=heads,
        )
        conv = nn.Conv2d if self.dims == 2 else nn.Conv1d
        self.levels = len(channels)
        self.embed = FourierEmbedding(emb_dim)
        E = self.embed.out_dim
        self.stem = conv(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels[0]]
        ch = channels[0]
        for i, c in enumerate(channels):
            level = nn.ModuleList()
            if i > 0:  # the pooled input of this level is a skip too (as in ADM)
                skips.append(ch)
            for _ in range(blocks):
                level.append(_Stage(_ResBlock(ch, c, E, conv, dropout), _Attention(c, heads) if i in attention else None))
                ch = c
                skips.append(ch)
            self.down.append(level)
        self.mid = nn.ModuleList([_ResBlock(ch, ch, E, conv, dropout), _Attention(ch, heads), _ResBlock(ch, ch, E, conv, dropout)])
        if self.levels - 1 not in attention:
            self.mid = nn.ModuleList([_ResBlock(ch, ch, E, conv, dropout)])
        self.up = nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(_Stage(_ResBlock(ch + skips.pop(), c, E, conv, dropout), _Attention(c, heads) if i in attention else None))
                ch = c
            self.up.append(level)
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = conv(ch, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _pool(self, h):
        return F.avg_pool2d(h, 2) if self.dims == 2 else F.avg_pool1d(h, 2)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.dims + 2:
            raise ValueError(f"{type(self).__name__}: expected x of rank {self.dims + 2} (B, C, ...), got shape {tuple(x.shape)}")
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ValueError(f"{type(self).__name__}: spatial sizes must be divisible by {factor}, got {tuple(x.shape[2:])}")
        e = F.silu(self.embed(c_noise.reshape(-1).expand(x.shape[0])))
        h = self.stem(x)
        hs = [h]
        for i, level in enumerate(self.down):
            if i > 0:
                h = self._pool(h)
                hs.append(h)
            for stage in level:
                h = stage(h, e)
                hs.append(h)
        for m in self.mid:
            h = m(h, e)
        for j, level in enumerate(self.up):
            if j > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            for stage in level:
                h = stage(torch.cat([h, hs.pop()], dim=1), e)
        return self.out(F.silu(self.out_norm(h)))


class UNet(_UNetND):
    """Time-conditioned 2D U-Net ``net(x, c_noise)`` for images ``(B, C, H, W)``.

    ``channels[i]`` is the width at level i (resolution ``H / 2**i``); ``attention`` lists the
    levels with self-attention (e.g. ``(2,)`` for 16x16 on 64x64 images with 3 levels).
    H and W must be divisible by ``2 ** (len(channels) - 1)``.
    """

    dims = 2


class UNet1D(_UNetND):
    """The 1D variant of :class:`UNet`, for fields and sequences ``(B, C, L)``.

    >>> net = UNet1D(in_channels=2, channels=(16, 32))
    >>> net(torch.zeros(3, 2, 32), torch.zeros(3)).shape
    torch.Size([3, 2, 32])
    """

    dims = 1


class MLP(nn.Module):
    """A residual MLP ``net(x, c_noise)`` for low-dimensional data ``(B, n)``.

    Blocks ``h <- h + W_2 silu(W_1 LN(h) + emb(c_noise))``; zero-initialised output.

    >>> MLP(dim=2, hidden=32, depth=2)(torch.zeros(5, 2), torch.zeros(5)).shape
    torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, emb_dim: int = 32):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"MLP: expected positive dim, hidden, depth; got {dim}, {hidden}, {depth}")
        self.config = dict(dim=dim, hidden=hidden, depth=depth, emb_dim=emb_dim)
        self.embed = FourierEmbedding(emb_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(dict(norm=nn.LayerNorm(hidden), fc1=nn.Linear(hidden, hidden), fc2=nn.Linear(hidden, hidden)))
            for _ in range(depth)
        )
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config["dim"]:
            raise ValueError(f"MLP: expected x of shape (B, {self.config['dim']}), got {tuple(x.shape)}")
        e = self.embed(c_noise.reshape(-1).expand(x.shape[0]))
        h = self.inp(x)
        for b in self.blocks:
            h = h + b["fc2"](F.silu(b["fc1"](b["norm"](h)) + e))
        return self.out(F.silu(h))


#: Network classes by the name used in configs and checkpoint cards.
NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet, "unet1d": UNet1D, "mlp": MLP}


def build_network(name: str, **config) -> nn.Module:
    """Build a network from its name and config (as stored in a checkpoint card).

    >>> build_network("mlp", dim=3).config["dim"]
    3
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}")
    return NETWORKS[name](**config)
