r"""A small bidirectional transformer for masked diffusion: ``logits(z) -> (B, L, V)``.

Token embedding of the ``V + 1`` symbols (the last is the mask), a learned position embedding,
``layers`` pre-norm transformer encoder blocks (no causal mask), a final layer norm and a linear
read-out to ``V`` logits. Time-agnostic (no time input), as masked diffusion allows (Zheng et al.
2024; the MDLM paper trains the same way for its time-independent variant).

>>> import torch
>>> net = MaskedTransformer(vocab_size=17, seq_len=64, width=32, layers=1, heads=2)
>>> net.logits(torch.full((2, 64), 17)).shape
torch.Size([2, 64, 17])
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from invdiff.diffusion.discrete.denoiser import check_tokens

__all__ = ["MaskedTransformer", "build_discrete_network"]


class MaskedTransformer(nn.Module):
    """Bidirectional transformer denoiser of masked diffusion (see the module docstring).

    :param vocab_size: ``V`` (the mask token is ``V``).
    :param seq_len: ``L``.
    :param width: model width; ``heads`` attention heads; ``layers`` blocks; MLP ratio 4.
    :param dropout: dropout in the blocks (training only).
    """

    def __init__(self, vocab_size: int, seq_len: int, width: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.vocab_size, self.seq_len = int(vocab_size), int(seq_len)
        self.embed = nn.Embedding(vocab_size + 1, width)
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, width))
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)

    @property
    def mask_index(self) -> int:
        return self.vocab_size

    def logits(self, z: Tensor) -> Tensor:
        """Unnormalised log-probabilities ``(B, L, V)`` of each token given the masked sequence ``z``."""
        check_tokens(z, self.vocab_size, self.seq_len)
        h = self.embed(z) + self.pos
        return self.head(self.norm(self.blocks(h)))

    forward = logits


def build_discrete_network(name: str, **kwargs) -> nn.Module:
    """The network called ``name`` (``"transformer"``) with its keyword settings."""
    if name != "transformer":
        raise ValueError(f"network: expected 'transformer', got {name!r}")
    return MaskedTransformer(**kwargs)
