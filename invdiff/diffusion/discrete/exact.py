r"""Exact discrete priors: mixtures of factorised categoricals, with closed-form masked conditionals.

.. math::
    p(x) = \sum_{k=1}^K w_k \prod_{l=1}^L P_{k l x_l}, \qquad
    p(x_l = v \mid z) = \sum_k \pi_k(z)\, P_{k l v}, \quad
    \pi_k(z) \propto w_k \prod_{l:\, z_l \ne m} P_{k l z_l} ,

so the optimal masked-diffusion denoiser is exact at every partially masked ``z``. The
empirical-set oracle (:func:`empirical_prior`) is the case of one component per member of a
finite set, :math:`P_{k l} = (1 - \epsilon)\,\delta_{x^{(k)}_l} + \epsilon / V`; as
:math:`\epsilon \to 0` it is the uniform distribution over the set (e.g. the scikit-learn digits),
whose posterior under any measurement is enumerable over the set.

>>> import torch
>>> prior = FactorizedMixture(torch.tensor([0.5, 0.5]), torch.tensor([[[0.9, 0.1]] * 2, [[0.1, 0.9]] * 2]))
>>> round(float(prior.log_prob(torch.tensor([[0, 0]])).exp()), 6)
0.41
"""
from __future__ import annotations

import itertools

import torch
from torch import Tensor

from invdiff.diffusion.discrete.categorical import sample_categorical
from invdiff.diffusion.discrete.denoiser import check_tokens

__all__ = ["FactorizedMixture", "empirical_prior", "all_sequences", "random_mixture"]


class FactorizedMixture(torch.nn.Module):
    """Mixture of factorised categoricals: weights ``(K,)``, probabilities ``(K, L, V)`` (float64 inside).

    :param codebook: optional :class:`~invdiff.diffusion.discrete.tokenizers.Codebook` (sets ``x_shape``).
    """

    def __init__(self, weights: Tensor, probs: Tensor, codebook=None) -> None:
        super().__init__()
        if probs.ndim != 3 or weights.ndim != 1 or weights.shape[0] != probs.shape[0]:
            raise ValueError(f"expected weights (K,) and probs (K, L, V), got {tuple(weights.shape)} and {tuple(probs.shape)}")
        if bool((probs < 0).any()) or bool((weights < 0).any()):
            raise ValueError("weights and probs must be non-negative")
        self.register_buffer("log_w", torch.log(weights.double() / weights.double().sum()))
        p = probs.double() / probs.double().sum(-1, keepdim=True)
        self.register_buffer("P", p)
        self.register_buffer("logP", torch.log(p))
        self.codebook = codebook
        if codebook is not None:
            if (codebook.vocab_size, codebook.seq_len) != (self.vocab_size, self.seq_len):
                raise ValueError(f"codebook has V={codebook.vocab_size}, L={codebook.seq_len}; the prior V={self.vocab_size}, L={self.seq_len}")
            self.x_shape = codebook.x_shape

    @property
    def vocab_size(self) -> int:
        return self.P.shape[2]

    @property
    def seq_len(self) -> int:
        return self.P.shape[1]

    @property
    def mask_index(self) -> int:
        return self.vocab_size

    def _component_logpost(self, z: Tensor) -> Tensor:
        """:math:`\\log \\pi_k(z)` up to a constant, ``(B, K)``; masked tokens contribute nothing."""
        V = self.vocab_size
        unmasked = (z != V).to(self.logP.dtype)  # (B, L)
        idx = z.clamp(max=V - 1)  # (B, L)
        # logP[k, l, idx[b, l]] -> (B, K, L)
        g = self.logP.permute(1, 2, 0)[torch.arange(self.seq_len, device=z.device), idx]  # (B, L, K)
        return self.log_w + (g * unmasked.unsqueeze(-1)).sum(1)

    def logits(self, z: Tensor) -> Tensor:
        """Log-probabilities ``(B, L, V)`` of :math:`p(x_l \\mid z)` (exact; float64)."""
        check_tokens(z, self.vocab_size, self.seq_len)
        post = torch.softmax(self._component_logpost(z), dim=-1)  # (B, K)
        probs = torch.einsum("bk,klv->blv", post, self.P)
        return torch.log(probs.clamp_min(1e-300))

    def log_prob(self, x: Tensor) -> Tensor:
        """:math:`\\log p(x)` of complete sequences ``(B, L)``, shape ``(B,)``."""
        check_tokens(x, self.vocab_size, self.seq_len, allow_mask=False)
        return torch.logsumexp(self._component_logpost(x), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws ``(n, L)``: a component, then independent tokens."""
        k = sample_categorical(self.log_w.expand(n, -1), generator)
        return sample_categorical(self.logP[k], generator)


def all_sequences(vocab_size: int, seq_len: int, device=None) -> Tensor:
    """Every sequence of ``{0..V-1}^L`` in lexicographic order, ``(V**L, L)`` (for enumeration)."""
    if vocab_size ** seq_len > 5_000_000:
        raise ValueError(f"{vocab_size}^{seq_len} sequences are too many to enumerate (limit 5e6)")
    return torch.tensor(list(itertools.product(range(vocab_size), repeat=seq_len)), dtype=torch.long, device=device)


def empirical_prior(tokens: Tensor, vocab_size: int, eps: float = 1e-6, codebook=None) -> FactorizedMixture:
    r"""The empirical-set oracle: uniform over the rows of ``tokens`` ``(N, L)``, smoothed by ``eps``
    (so that every sequence keeps a positive probability and no conditional is undefined)."""
    check_tokens(tokens, vocab_size, tokens.shape[1], allow_mask=False)
    if not 0 < eps < 1:
        raise ValueError(f"eps: expected in (0, 1), got {eps}")
    onehot = torch.nn.functional.one_hot(tokens, vocab_size).double()
    probs = (1 - eps) * onehot + eps / vocab_size
    return FactorizedMixture(torch.ones(tokens.shape[0], dtype=torch.float64), probs, codebook=codebook)


def random_mixture(n_components: int, seq_len: int, vocab_size: int, scale: float = 2.0,
                   generator: torch.Generator | None = None, codebook=None) -> FactorizedMixture:
    r"""A random factorised mixture (seeded): :math:`P_{kl} = \mathrm{softmax}(s\,g_{kl})`,
    :math:`w = \mathrm{softmax}(g / 2)` with standard normal :math:`g`; ``scale`` :math:`s` sets how
    peaked the token distributions are."""
    from invdiff.utils.random import randn

    probs = torch.softmax(scale * randn((n_components, seq_len, vocab_size), generator, dtype=torch.float64), -1)
    weights = torch.softmax(0.5 * randn((n_components,), generator, dtype=torch.float64), -1)
    return FactorizedMixture(weights, probs, codebook=codebook)
