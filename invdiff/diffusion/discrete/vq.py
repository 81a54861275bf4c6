r"""A learned vector-quantised tokenizer for image patches: one token per ``p x p`` patch.

:class:`PatchCodebook` is a :class:`~invdiff.diffusion.discrete.tokenizers.Codebook` whose ``V``
code vectors are ``p x p`` patches (:math:`d = p^2`): a ``(C=1, H, W)`` image is cut into
:math:`L = HW/p^2` non-overlapping patches in raster order, each encoded by its nearest code
patch and decoded by folding the code patches back. :func:`train_patch_vq` learns the code
patches by Lloyd's algorithm on training patches, which minimises the vector-quantisation
distortion

.. math::
    \mathcal D(e) = \frac1N \sum_{n=1}^N \min_v \| s_n - e_v \|^2 ,

monotonically (each assignment and each centroid update cannot increase it). This is the VQ
autoencoder with the identity as encoder and decoder (no network): the smallest learned
tokenizer, enough for masked diffusion over patch tokens and for APS, which only needs
:meth:`~Codebook.embed` and :meth:`~Codebook.signal` (both work on patch codes unchanged).

>>> import torch
>>> x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
>>> cb = train_patch_vq(x, 16, patch=2, iters=5, generator=torch.Generator().manual_seed(1))
>>> cb.seq_len, cb.dim, cb.decode(cb.encode(x[:3])).shape
(16, 4, torch.Size([3, 1, 8, 8]))
"""
from __future__ import annotations

import torch
from torch import Tensor

from invdiff.diffusion.discrete.tokenizers import Codebook

__all__ = ["PatchCodebook", "train_patch_vq", "vq_distortion"]


class PatchCodebook(Codebook):
    """Code patches ``(V, p * p)`` tiling single-channel images of shape ``(1, H, W)``.

    :param codes: the code patches, flattened row-major, ``(V, p * p)``.
    :param x_shape: ``(1, H, W)`` with ``H`` and ``W`` multiples of ``patch``.
    :param patch: the patch side ``p``.
    """

    def __init__(self, codes: Tensor, x_shape, patch: int) -> None:
        x_shape = tuple(int(s) for s in x_shape)
        if len(x_shape) != 3 or x_shape[0] != 1 or x_shape[1] % patch or x_shape[2] % patch:
            raise ValueError(f"x_shape: expected (1, H, W) with H, W multiples of patch={patch}, got {x_shape}")
        if codes.ndim != 2 or codes.shape[1] != patch * patch:
            raise ValueError(f"codes: expected shape (V, {patch * patch}), got {tuple(codes.shape)}")
        super().__init__(codes, x_shape)
        self.patch = int(patch)

    def patches(self, x: Tensor) -> Tensor:
        """Raster-order patches ``(B, L, p * p)`` of images ``(B, 1, H, W)``."""
        p, (_, H, W) = self.patch, self.x_shape
        B = x.shape[0]
        return x.reshape(B, H // p, p, W // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)

    def _to_signal(self, e: Tensor) -> Tensor:  # (B, L, p*p) -> (B, 1, H, W)
        p, (_, H, W) = self.patch, self.x_shape
        B = e.shape[0]
        return e.reshape(B, H // p, W // p, p, p).permute(0, 1, 3, 2, 4).reshape(B, 1, H, W)

    def encode(self, x: Tensor) -> Tensor:
        """Nearest-code-patch tokens ``(B, L)`` of images ``(B, 1, H, W)``."""
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")
        s = self.patches(x.to(self.codes.dtype))
        return torch.cdist(s, self.codes.expand(s.shape[0], -1, -1)).argmin(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", patch={self.patch}"


def vq_distortion(cb: PatchCodebook, x: Tensor) -> float:
    r"""Mean squared distance :math:`\mathcal D` of the patches of ``x`` to their nearest code patch."""
    s = cb.patches(x.to(cb.codes.dtype))
    return float(torch.cdist(s, cb.codes.expand(s.shape[0], -1, -1)).min(-1).values.pow(2).mean())


def train_patch_vq(x: Tensor, vocab_size: int, patch: int = 4, iters: int = 20,
                   generator: torch.Generator | None = None) -> PatchCodebook:
    """A :class:`PatchCodebook` of ``vocab_size`` code patches learned from images ``x``
    ``(N, 1, H, W)`` by ``iters`` Lloyd iterations, started from distinct random training patches
    (an empty cell keeps its code patch)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"x: expected images of shape (N, 1, H, W), got {tuple(x.shape)}")
    if not isinstance(vocab_size, int) or vocab_size < 2 or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"expected vocab_size >= 2 and iters >= 0 (ints), got {vocab_size!r}, {iters!r}")
    cb = PatchCodebook(torch.zeros(vocab_size, patch * patch, dtype=x.dtype), tuple(x.shape[1:]), patch)
    s = cb.patches(x).reshape(-1, patch * patch)
    if s.shape[0] < vocab_size:
        raise ValueError(f"{s.shape[0]} training patches for {vocab_size} codes: expected at least as many")
    codes = s[torch.randperm(s.shape[0], generator=generator)[:vocab_size]].clone()
    for _ in range(iters):
        assign = torch.cdist(s, codes).argmin(1)
        counts = torch.bincount(assign, minlength=vocab_size).to(s.dtype)
        sums = torch.zeros_like(codes).index_add_(0, assign, s)
        codes = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1), codes)
    return PatchCodebook(codes, tuple(x.shape[1:]), patch)
