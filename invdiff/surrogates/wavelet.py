r"""Differentiable periodised 2D discrete wavelet transform over (t, x), bands as channels.

WDNO (Hu et al., "Wavelet Diffusion Neural Operator", ICLR 2025) runs diffusion on the
one-level 2D DWT of a whole trajectory :math:`u(t, x)` with periodisation, the four bands
stacked as channels. Along one axis of even length :math:`N`, the periodised analysis with
decomposition filters :math:`h` (low) and :math:`g` (high) of length :math:`L` is

.. math::
    a_k = \sum_{j=0}^{L-1} h_j\, u_{(2k + L/2 - j) \bmod N}, \qquad
    d_k = \sum_{j=0}^{L-1} g_j\, u_{(2k + L/2 - j) \bmod N}, \qquad k < N/2,

(PyWavelets' ``mode="periodization"``), i.e. an :math:`N \times N` matrix :math:`W` whose first
:math:`N/2` rows give :math:`a` and the last :math:`N/2` give :math:`d`. The 2D transform of a
trajectory :math:`U` (``T x N``) is :math:`C = W_T\, U\, W_N^\top`, split into the bands
``LL, LH, HL, HH`` (first letter: time, second: space), each ``T/2 x N/2``. The inverse
:math:`U = S_T\, C\, S_N^\top` uses the synthesis matrices :math:`S` built the same way from the
reconstruction filters, so :math:`S W = I` (perfect reconstruction); for an orthogonal wavelet
(Haar, Daubechies) :math:`S = W^\top` and the transform preserves energy.

Why not ptwt: ptwt 1.0.1's convolutional ``wavedec2`` pads ("zero", "reflect", "periodic",
"symmetric") and returns :math:`\lfloor (N + L - 1)/2 \rfloor` redundant coefficients per axis;
it has no periodisation mode, and its boundary-orthogonalised matrix transforms exist for
orthogonal wavelets only (not bior2.4). The periodised transform is two small dense matrices,
exact and differentiable; PyWavelets (ptwt's own dependency) supplies the filter banks, and
the tests check the coefficients against ``pywt.dwt2(..., mode="periodization")``.

>>> import torch
>>> dwt = DWT2("haar")
>>> u = torch.randn(2, 1, 8, 16, dtype=torch.float64)
>>> c = dwt(u)                                  # (B, 4 C, T/2, N/2): LL, LH, HL, HH
>>> c.shape, bool(torch.allclose(dwt.inverse(c), u))
(torch.Size([2, 4, 4, 8]), True)
"""
from __future__ import annotations

import torch
from torch import nn

from invdiff.utils.checks import check_floating

__all__ = ["DWT2", "BandScaler", "analysis_matrix", "synthesis_matrix", "BANDS"]

#: Band order along the channel axis (first letter: time axis, second: space axis).
BANDS = ("LL", "LH", "HL", "HH")


def _wavelet(name: str):
    import pywt

    if not isinstance(name, str):
        raise TypeError(f"wavelet: expected a PyWavelets name such as 'bior2.4' or 'haar', got {type(name).__name__}")
    try:
        return pywt.Wavelet(name)
    except ValueError:
        raise ValueError(f"wavelet: unknown discrete wavelet {name!r}; e.g. 'haar', 'bior2.4', 'db2'") from None


def _periodised(lo, hi, n: int, transpose: bool) -> torch.Tensor:
    if n < 2 or n % 2:
        raise ValueError(f"periodised DWT: expected an even axis length >= 2, got {n}")
    L = len(lo)
    k = torch.arange(n // 2)[:, None]
    j = torch.arange(L)[None, :]
    cols = (2 * k + L // 2 - j) % n  # (n/2, L)
    M = torch.zeros(n, n, dtype=torch.float64)
    for row0, filt in ((0, lo), (n // 2, hi)):
        f = torch.as_tensor(filt, dtype=torch.float64).expand(n // 2, L)
        M.index_put_((k.expand(-1, L) + row0, cols), f, accumulate=True)
    return M.T if transpose else M


def analysis_matrix(wavelet: str, n: int) -> torch.Tensor:
    r"""The ``(n, n)`` periodised analysis matrix :math:`W` (rows: ``n/2`` low-pass, then ``n/2`` high-pass)."""
    w = _wavelet(wavelet)
    return _periodised(w.dec_lo, w.dec_hi, n, transpose=False)


def synthesis_matrix(wavelet: str, n: int) -> torch.Tensor:
    r"""The ``(n, n)`` periodised synthesis matrix :math:`S = W^{-1}`, built from the reconstruction filters.

    Synthesis is the adjoint of analysis with the dual filters: :math:`S = \tilde W^\top`, where
    :math:`\tilde W` is the analysis matrix of the time-reversed reconstruction filters.
    """
    w = _wavelet(wavelet)
    return _periodised(w.rec_lo[::-1], w.rec_hi[::-1], n, transpose=True)


class DWT2(nn.Module):
    r"""Periodised 2D DWT over the last two axes (t, x), ``levels`` deep, bands as channels.

    ``forward(u)``: ``(B, C, T, N)`` -> ``(B, 4C, T/2, N/2)`` for ``levels=1``, channels ordered
    band-major within each input channel (``[LL, LH, HL, HH]`` of channel 0, then of channel 1,
    ...). For ``levels > 1`` the transform recurses on ``LL`` (Mallat pyramid): use
    :meth:`decompose` / :meth:`reconstruct` for the list ``[LL_J, D_J, ..., D_1]``
    (``D_j``: the ``LH, HL, HH`` bands of level ``j``, ``(B, 3C, T/2^j, N/2^j)``).

    :param wavelet: a PyWavelets discrete wavelet name (``"bior2.4"`` as WDNO, ``"haar"``).
    :param levels: decomposition depth :math:`J \ge 1`; ``T`` and ``N`` must be divisible by :math:`2^J`.
    """

    def __init__(self, wavelet: str = "bior2.4", levels: int = 1):
        super().__init__()
        _wavelet(wavelet)
        if not isinstance(levels, int) or levels < 1:
            raise ValueError(f"levels: expected an int >= 1, got {levels!r}")
        self.wavelet, self.levels = wavelet, levels
        self._mats: dict = {}

    def _pair(self, n: int, like: torch.Tensor):
        key = (n, like.dtype, like.device)
        if key not in self._mats:
            self._mats[key] = (analysis_matrix(self.wavelet, n).to(like), synthesis_matrix(self.wavelet, n).to(like))
        return self._mats[key]

    def _check(self, u: torch.Tensor) -> None:
        check_floating("u", u)
        if u.ndim != 4:
            raise ValueError(f"u: expected a trajectory batch (B, C, T, N), got shape {tuple(u.shape)}")
        f = 2**self.levels
        if u.shape[-2] % f or u.shape[-1] % f:
            raise ValueError(f"u: T and N must be divisible by 2**levels = {f}, got T={u.shape[-2]}, N={u.shape[-1]}")

    def _one(self, u: torch.Tensor) -> torch.Tensor:
        T, N = u.shape[-2:]
        Wt, Wn = self._pair(T, u)[0], self._pair(N, u)[0]
        c = Wt @ u @ Wn.T  # (B, C, T, N)
        t2, n2 = T // 2, N // 2
        bands = (c[..., :t2, :n2], c[..., :t2, n2:], c[..., t2:, :n2], c[..., t2:, n2:])
        return torch.stack(bands, dim=2).flatten(1, 2)  # (B, C*4, T/2, N/2)

    def _one_inv(self, c: torch.Tensor) -> torch.Tensor:
        B, C4, t2, n2 = c.shape
        if C4 % 4:
            raise ValueError(f"coefficients: expected a multiple of 4 channels (bands), got {C4}")
        b = c.reshape(B, C4 // 4, 4, t2, n2)
        full = torch.cat([torch.cat([b[:, :, 0], b[:, :, 1]], -1), torch.cat([b[:, :, 2], b[:, :, 3]], -1)], -2)
        St, Sn = self._pair(2 * t2, c)[1], self._pair(2 * n2, c)[1]
        return St @ full @ Sn.T

    def decompose(self, u: torch.Tensor) -> list[torch.Tensor]:
        """``[LL_J, D_J, ..., D_1]`` with ``D_j`` the ``(LH, HL, HH)`` bands of level ``j`` as channels."""
        self._check(u)
        C = u.shape[1]
        out = []
        a = u
        for _ in range(self.levels):
            c = self._one(a).reshape(a.shape[0], C, 4, a.shape[-2] // 2, a.shape[-1] // 2)
            out.insert(0, c[:, :, 1:].flatten(1, 2))
            a = c[:, :, 0]
        return [a, *out]

    def reconstruct(self, coeffs: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`decompose`."""
        if len(coeffs) != self.levels + 1:
            raise ValueError(f"coefficients: expected {self.levels + 1} arrays (LL and one detail set per level), got {len(coeffs)}")
        a = coeffs[0]
        C = a.shape[1]
        for d in coeffs[1:]:
            if d.shape[1] != 3 * C or d.shape[-2:] != a.shape[-2:]:
                raise ValueError(f"detail bands: expected shape (B, {3 * C}, {a.shape[-2]}, {a.shape[-1]}), got {tuple(d.shape)}")
            both = torch.cat([a[:, :, None], d.reshape(a.shape[0], C, 3, *a.shape[-2:])], 2).flatten(1, 2)
            a = self._one_inv(both)
        return a

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """One-level bands as channels ``(B, 4C, T/2, N/2)`` (``levels=1`` only)."""
        if self.levels != 1:
            raise ValueError("forward packs one level of bands as channels; use decompose() for levels > 1")
        self._check(u)
        return self._one(u)

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward`: ``(B, 4C, T/2, N/2)`` -> ``(B, C, T, N)``."""
        check_floating("coefficients", c)
        if c.ndim != 4:
            raise ValueError(f"coefficients: expected (B, 4C, T/2, N/2), got shape {tuple(c.shape)}")
        return self._one_inv(c)


class BandScaler(nn.Module):
    r"""Per-channel (per-band) affine scaling :math:`z_c = (c - m_c)/s_c`, fitted on training data.

    WDNO normalises each wavelet band separately, since their magnitudes differ by orders of
    magnitude (``LL`` carries most of the energy). ``fit`` sets :math:`m_c` and :math:`s_c` to the
    mean and standard deviation of channel :math:`c` over the batch and both grid axes.

    >>> sc = BandScaler(2).fit(torch.randn(100, 2, 4, 4) * torch.tensor([1.0, 10.0]).view(1, 2, 1, 1))
    >>> bool((sc.scale[1] / sc.scale[0] > 5).item())
    True
    """

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))

    def fit(self, c: torch.Tensor, eps: float = 1e-6) -> "BandScaler":
        if c.ndim < 3 or c.shape[1] != self.shift.numel():
            raise ValueError(f"fit: expected (B, {self.shift.numel()}, ...), got shape {tuple(c.shape)}")
        dims = [0, *range(2, c.ndim)]
        self.shift.copy_(c.mean(dims).to(self.shift))
        self.scale.copy_(c.std(dims).clamp_min(eps).to(self.scale))
        return self

    def _view(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.to(like).reshape(1, -1, *([1] * (like.ndim - 2)))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (c - self._view(self.shift, c)) / self._view(self.scale, c)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self._view(self.scale, z) + self._view(self.shift, z)
