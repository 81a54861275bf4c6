r"""Tokenisers with a codebook embedding: signals <-> token sequences.

A :class:`Codebook` holds ``V`` code vectors :math:`e_1, \dots, e_V \in \mathbb R^d`; a token
sequence :math:`x \in \{0, \dots, V-1\}^L` decodes to the signal made of its code vectors,
reshaped to ``x_shape`` (``L * d`` values). Encoding takes the nearest code vector:

.. math::
    \mathrm{dec}(x) = \mathrm{reshape}(e_{x_1}, \dots, e_{x_L}), \qquad
    \mathrm{enc}(s)_l = \arg\min_v \| s_l - e_v \| .

:func:`intensity_quantizer` is the scalar case (:math:`d = 1`): ``V`` equally spaced levels on
``[lo, hi]`` (pixels of the 8x8 digits: 17 levels, phantoms). Anchored posterior sampling
differentiates through :meth:`Codebook.embed` (the expected code vector under token
probabilities) and :meth:`Codebook.quantize` (nearest code vector, straight-through).

>>> cb = intensity_quantizer(3, x_shape=(4,))
>>> cb.decode(torch.tensor([[0, 1, 2, 2]]))
tensor([[0.0000, 0.5000, 1.0000, 1.0000]])
>>> cb.encode(torch.tensor([[0.1, 0.4, 0.8, 2.0]]))
tensor([[0, 1, 2, 2]])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Codebook", "intensity_quantizer"]


class Codebook(torch.nn.Module):
    """``V`` code vectors (``(V,)`` scalars or ``(V, d)``) and the signal shape they tile.

    :param codes: the code vectors, float.
    :param x_shape: the shape of one signal (no batch axis); ``prod(x_shape) = L * d``.
    """

    def __init__(self, codes: Tensor, x_shape) -> None:
        super().__init__()
        if not isinstance(codes, Tensor) or not codes.is_floating_point() or codes.ndim not in (1, 2):
            raise ValueError(f"codes: expected a float tensor of shape (V,) or (V, d), got {getattr(codes, 'shape', codes)}")
        codes = codes.reshape(codes.shape[0], -1)
        self.register_buffer("codes", codes.clone())
        self.x_shape = tuple(int(s) for s in x_shape)
        n = math.prod(self.x_shape)
        if n % self.dim:
            raise ValueError(f"x_shape {self.x_shape} has {n} values, not a multiple of the code size {self.dim}")
        self.seq_len = n // self.dim

    @property
    def vocab_size(self) -> int:
        return self.codes.shape[0]

    @property
    def dim(self) -> int:
        return self.codes.shape[1]

    def _to_signal(self, e: Tensor) -> Tensor:  # (B, L, d) -> (B, *x_shape)
        return e.reshape(e.shape[0], *self.x_shape)

    def decode(self, tokens: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Signals ``(B, *x_shape)`` of the tokens ``(B, L)`` (long, each in ``[0, V)``)."""
        if tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[1] != self.seq_len:
            raise ValueError(f"tokens: expected a long tensor of shape (B, {self.seq_len}), got {tokens.dtype} {tuple(tokens.shape)}")
        if bool((tokens < 0).any()) or bool((tokens >= self.vocab_size).any()):
            raise ValueError(f"tokens: expected values in [0, {self.vocab_size}) (no mask tokens), got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        codes = self.codes if dtype is None else self.codes.to(dtype)
        return self._to_signal(codes[tokens])

    def encode(self, x: Tensor) -> Tensor:
        """Nearest-code tokens ``(B, L)`` of signals ``(B, *x_shape)``."""
        if tuple(x.shape[1:]) != self.x_shape:
            raise ValueError(f"x: expected shape (B, {', '.join(map(str, self.x_shape))}), got {tuple(x.shape)}")
        s = x.reshape(x.shape[0], self.seq_len, self.dim).to(self.codes.dtype)
        d2 = (s.unsqueeze(2) - self.codes).pow(2).sum(-1)  # (B, L, V)
        return d2.argmin(-1)

    def embed(self, probs: Tensor) -> Tensor:
        r"""Expected code vectors :math:`\bar e_l = \sum_v p_{lv} e_v` of probabilities ``(B, L, V)``,
        shape ``(B, L, d)`` (differentiable)."""
        return probs @ self.codes.to(probs.dtype)

    def quantize(self, e: Tensor, straight_through: bool = True) -> Tensor:
        r"""Nearest code vector of each ``e`` ``(B, L, d)``; with ``straight_through`` the value
        is the code vector and the gradient is the identity: :math:`e + \mathrm{sg}(q - e)`."""
        d2 = (e.detach().unsqueeze(2) - self.codes.to(e.dtype)).pow(2).sum(-1)
        q = self.codes.to(e.dtype)[d2.argmin(-1)]
        return e + (q - e).detach() if straight_through else q

    def signal(self, e: Tensor) -> Tensor:
        """Code vectors ``(B, L, d)`` as signals ``(B, *x_shape)``."""
        return self._to_signal(e)

    def extra_repr(self) -> str:
        return f"V={self.vocab_size}, d={self.dim}, x_shape={self.x_shape}"


def intensity_quantizer(levels: int, x_shape, lo: float = 0.0, hi: float = 1.0,
                        dtype: torch.dtype = torch.float32) -> Codebook:
    r"""``levels`` equally spaced intensities :math:`e_v = lo + v\,(hi - lo)/(V - 1)` tiling ``x_shape``."""
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels: expected an int >= 2, got {levels!r}")
    if not hi > lo:
        raise ValueError(f"expected hi > lo, got lo={lo}, hi={hi}")
    return Codebook(torch.linspace(lo, hi, levels, dtype=dtype), x_shape)
