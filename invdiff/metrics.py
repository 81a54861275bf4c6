"""Distances between sample sets, for checking samplers against exact references.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> a = torch.randn(500, 3, generator=g)
>>> b = a + torch.tensor([3.0, 0.0, 0.0])        # a shifted copy
>>> sw = sliced_wasserstein(a, b, n_projections=2000, generator=g)
>>> abs(sw.item() - 3.0 / 3**0.5) < 0.1          # SW_2 of a shift m is |m| / sqrt(d)
True
"""
from __future__ import annotations

import torch

from invdiff.utils.checks import check_finite, check_floating
from invdiff.utils.random import randn

__all__ = ["sliced_wasserstein", "wasserstein_1d", "psnr", "ssim"]


def _as_weights(name: str, w: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor | None:
    if w is None:
        return None
    check_floating(name, w)
    if w.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one weight per sample), got {tuple(w.shape)}")
    check_finite(name, w)
    if bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"{name}: expected non-negative weights with a positive sum, got sum {float(w.sum())}")
    return (w / w.sum()).to(like)


def wasserstein_1d(
    u: torch.Tensor,
    v: torch.Tensor,
    p: float = 2.0,
    u_weights: torch.Tensor | None = None,
    v_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``W_p`` between weighted 1-D empirical distributions, batched over rows: ``u`` (L, n), ``v`` (L, m).

    Through the quantile functions, on the merged grid of cumulative weights:

    .. math::
        W_p^p(\\mu, \\nu) = \\int_0^1 |F_\\mu^{-1}(q) - F_\\nu^{-1}(q)|^p \\, dq .

    Weights (``(n,)`` / ``(m,)``, shared by all rows) default to uniform. Returns ``(L,)``.

    >>> wasserstein_1d(torch.tensor([[0.0, 1.0]]), torch.tensor([[2.0, 3.0]]), p=1)
    tensor([2.])
    """
    L, n = u.shape
    m = v.shape[1]
    u_sorted, iu = torch.sort(u, dim=1)
    v_sorted, iv = torch.sort(v, dim=1)
    if u_weights is None and v_weights is None and n == m:
        return ((u_sorted - v_sorted).abs() ** p).mean(dim=1) ** (1 / p)
    wu = torch.full((n,), 1.0 / n, dtype=u.dtype, device=u.device) if u_weights is None else u_weights
    wv = torch.full((m,), 1.0 / m, dtype=v.dtype, device=v.device) if v_weights is None else v_weights
    cu = torch.cumsum(wu[iu], dim=1)  # (L, n) cumulative weights in sorted order
    cv = torch.cumsum(wv[iv], dim=1)
    cu = cu / cu[:, -1:]
    cv = cv / cv[:, -1:]
    q = torch.sort(torch.cat([cu, cv], dim=1), dim=1).values  # merged breakpoints in (0, 1]
    dq = torch.diff(q, dim=1, prepend=torch.zeros_like(q[:, :1]))
    # quantile of each distribution on each interval (q_{k-1}, q_k]: first index with cdf >= q_k
    ju = torch.searchsorted(cu.contiguous(), q.contiguous()).clamp(max=n - 1)
    jv = torch.searchsorted(cv.contiguous(), q.contiguous()).clamp(max=m - 1)
    diff = torch.gather(u_sorted, 1, ju) - torch.gather(v_sorted, 1, jv)
    return ((diff.abs() ** p) * dq).sum(dim=1) ** (1 / p)


def sliced_wasserstein(
    a: torch.Tensor,
    b: torch.Tensor,
    n_projections: int = 256,
    p: float = 2.0,
    generator: torch.Generator | None = None,
    weights_a: torch.Tensor | None = None,
    weights_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein distance between sample sets ``a`` (n, d) and ``b`` (m, d).

    Monte Carlo over ``n_projections`` directions ``theta`` uniform on the sphere
    (Rabin et al. 2011; Bonneel et al. 2015):

    .. math::
        SW_p(\\mu, \\nu) = \\Big( \\mathbb E_{\\theta \\sim U(S^{d-1})}
        W_p^p(\\theta^\\top_\\# \\mu, \\theta^\\top_\\# \\nu) \\Big)^{1/p},

    each 1-D distance exact (:func:`wasserstein_1d`). ``weights_a`` / ``weights_b`` are optional
    importance weights (e.g. from SMC), normalised here. Extra axes are flattened:
    ``(n, *shape)`` is read as ``(n, prod(shape))``. Comparing two estimates with the same
    ``generator`` seed uses the same directions, which removes most Monte Carlo noise from the
    comparison. Returns a 0-d tensor in the inputs' dtype.

    >>> a = torch.zeros(4, 2)
    >>> float(sliced_wasserstein(a, a))
    0.0
    """
    for name, t in (("a", a), ("b", b)):
        check_floating(name, t)
        if t.ndim < 2 or t.shape[0] < 1:
            raise ValueError(f"{name}: expected samples of shape (n, d) with n >= 1, got {tuple(t.shape)}")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b: expected the same dimension d, got a (n, {a.shape[1]}) and b (m, {b.shape[1]})")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: expected a positive int, got {n_projections!r}")
    if not p >= 1:
        raise ValueError(f"p: expected p >= 1, got {p}")
    check_finite("a", a)
    check_finite("b", b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(dtype)
    wa = _as_weights("weights_a", weights_a, a.shape[0], a)
    wb = _as_weights("weights_b", weights_b, b.shape[0], b)
    theta = randn((a.shape[1], n_projections), generator=generator, device=a.device, dtype=dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    w = wasserstein_1d((a @ theta).T, (b @ theta).T, p=p, u_weights=wa, v_weights=wb)
    return (w**p).mean() ** (1 / p)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)``, shape (B,).

    >>> float(psnr(torch.zeros(1, 4), torch.full((1, 4), 0.1)))   # MSE 0.01 -> 20 dB
    20.0
    """
    if x_hat.shape != x.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x_hat.shape)} and {tuple(x.shape)}")
    mse = (x_hat - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image of ``(B, C, H, W)`` batches, shape (B,).

    scikit-image's ``structural_similarity`` (7x7 uniform window, channels averaged).
    """
    from skimage.metrics import structural_similarity

    if x_hat.shape != x.shape or x.ndim != 4:
        raise ValueError(f"ssim: expected two (B, C, H, W) tensors of equal shape, got {tuple(x_hat.shape)}, {tuple(x.shape)}")
    a, b = x_hat.detach().double().cpu().numpy(), x.detach().double().cpu().numpy()
    vals = [structural_similarity(a[i], b[i], data_range=data_range, channel_axis=0) for i in range(len(a))]
    return torch.tensor(vals, dtype=torch.float64)
