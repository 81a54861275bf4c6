"""Fourier-space building blocks shared by the periodic PDE solvers.

Wavenumbers of a real FFT grid, the 2/3 dealiasing mask, and the ETDRK4 time stepper of
Cox & Matthews (2002) with the contour-integral coefficients of Kassam & Trefethen (2005).

All fields live on the torus :math:`[0, L)^d` sampled at :math:`x_j = j L / N`, and are
transformed with ``torch.fft.rfftn`` over the last ``d`` axes.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch


def wavenumbers(shape: Sequence[int], lengths: Sequence[float], device=None, dtype=torch.float64) -> list[torch.Tensor]:
    """Angular wavenumbers :math:`k = 2\\pi m / L` of an ``rfftn`` grid, one broadcastable tensor per axis.

    Axis ``i`` gets a tensor of shape ``(1, ..., n_i', ..., 1)`` where ``n_i' = n_i`` except for the
    last axis (``n // 2 + 1``, the half spectrum of ``rfftn``).

    >>> [k.shape for k in wavenumbers((8, 8), (1.0, 1.0))]
    [torch.Size([8, 1]), torch.Size([1, 5])]
    """
    d = len(shape)
    out = []
    for i, (n, L) in enumerate(zip(shape, lengths)):
        kw = dict(d=1.0 / n, dtype=torch.float64)
        m = torch.fft.rfftfreq(n, **kw) if i == d - 1 else torch.fft.fftfreq(n, **kw)
        view = [1] * d
        view[i] = m.numel()
        out.append((2 * math.pi / L * m).to(device=device, dtype=dtype).reshape(view))
    return out


def derivative_wavenumbers(shape: Sequence[int], lengths: Sequence[float], device=None, dtype=torch.float64) -> list[torch.Tensor]:
    """Wavenumbers for odd (first) derivatives: as :func:`wavenumbers` with the Nyquist mode set to 0.

    The Nyquist mode of an even grid has no sign; setting its derivative to zero keeps the
    Fourier multiplier Hermitian, so derivatives of real fields stay real (Trefethen, *Spectral
    Methods in MATLAB*, ch. 3).
    """
    ks = wavenumbers(shape, lengths, device, dtype)
    out = []
    for k, n in zip(ks, shape):
        k = k.clone()
        if n % 2 == 0:
            k[k.abs() == k.abs().max()] = 0.0
        out.append(k)
    return out


def dealias_mask(shape: Sequence[int], device=None) -> torch.Tensor:
    """Orszag's 2/3 rule on an ``rfftn`` grid: ``True`` where every index satisfies :math:`|m| < N/3`.

    .. math::
        P(m) = \\prod_i \\mathbb{1}[\\,|m_i| < N_i / 3\\,]

    >>> dealias_mask((6,)).tolist()
    [True, True, False, False]
    """
    d = len(shape)
    mask = None
    for i, n in enumerate(shape):
        m = torch.fft.rfftfreq(n, d=1.0 / n) if i == d - 1 else torch.fft.fftfreq(n, d=1.0 / n)
        view = [1] * d
        view[i] = m.numel()
        mi = (m.abs() < n / 3).reshape(view)
        mask = mi if mask is None else mask & mi
    return mask.to(device)


class ETDRK4:
    """Exponential time differencing RK4 for :math:`\\hat v_t = \\mathcal{L} \\hat v + \\mathcal{N}(\\hat v)`.

    With a diagonal linear part :math:`\\mathcal{L}` (Fourier multipliers) and step :math:`h`
    (Cox & Matthews 2002, eq. 26; Kassam & Trefethen 2005, eq. 2.5):

    .. math::
        a &= e^{\\mathcal{L}h/2} v_n + Q\\,N(v_n), \\quad
        b = e^{\\mathcal{L}h/2} v_n + Q\\,N(a), \\\\
        c &= e^{\\mathcal{L}h/2} a + Q\\,(2N(b) - N(v_n)), \\\\
        v_{n+1} &= e^{\\mathcal{L}h} v_n + f_1 N(v_n) + 2 f_2 (N(a) + N(b)) + f_3 N(c),

    where :math:`Q, f_1, f_2, f_3` are the :math:`\\varphi`-functions of :math:`\\mathcal{L}h`,
    evaluated stably as means over ``n_contour`` points of a unit circle around each
    :math:`\\mathcal{L}h` (Kassam & Trefethen 2005, sec. 2). Fourth order in :math:`h`; exact when
    :math:`\\mathcal{N} = 0`.

    ``L`` is a real or complex tensor of multipliers; coefficients are computed in complex128
    and cast to the complex type matching ``dtype``. The nonlinear term must not depend on time.

    >>> class Zero:  # N = 0: the step is then exactly exp(h L)
    ...     def forward(self, v): return 0 * v, None
    ...     def vjp(self, saved, Nbar): return 0 * Nbar
    >>> L = -torch.arange(5.0) ** 2
    >>> v = ETDRK4(L, h=0.1).step(torch.ones(5, dtype=torch.complex64), Zero())
    >>> torch.allclose(v.real, torch.exp(0.1 * L))
    True
    """

    def __init__(self, L: torch.Tensor, h: float, n_contour: int = 32, dtype: torch.dtype = torch.float32):
        if not h > 0:
            raise ValueError(f"ETDRK4: expected a step h > 0, got {h}")
        cdtype = torch.complex128
        Lh = h * L.to(cdtype)
        r = torch.exp(1j * math.pi * (torch.arange(1, n_contour + 1, dtype=torch.float64) - 0.5) / n_contour).to(L.device)
        LR = Lh.unsqueeze(-1) + r  # (..., M)

        def mean(z: torch.Tensor) -> torch.Tensor:
            out = z.mean(-1)
            return out if torch.is_complex(L) else out.real.to(cdtype)

        eLR = torch.exp(LR)
        self.h = h
        self.E = torch.exp(Lh)
        self.E2 = torch.exp(Lh / 2)
        self.Q = h * mean((torch.exp(LR / 2) - 1) / LR)
        self.f1 = h * mean((-4 - LR + eLR * (4 - 3 * LR + LR**2)) / LR**3)
        self.f2 = h * mean((2 + LR + eLR * (-2 + LR)) / LR**3)
        self.f3 = h * mean((-4 - 3 * LR - LR**2 + eLR * (4 - LR)) / LR**3)
        target = torch.complex128 if dtype == torch.float64 else torch.complex64
        for name in ("E", "E2", "Q", "f1", "f2", "f3"):
            setattr(self, name, getattr(self, name).to(target))
        # conjugates, used by the adjoint step (ETDRK4Step.backward)
        self.conj = {name: getattr(self, name).conj().resolve_conj() for name in ("E", "E2", "Q", "f1", "f2", "f3")}

    def step(self, v: torch.Tensor, nonlinear) -> torch.Tensor:
        """One step of size ``h`` of the state ``v`` (Fourier coefficients); see :class:`ETDRK4Step`.

        ``nonlinear`` has ``forward(v) -> (N(v), saved)`` and ``vjp(saved, Nbar) -> vbar``.
        """
        return ETDRK4Step.apply(v, self, nonlinear)


@functools.lru_cache(maxsize=64)
def _last_axis_weights(n_last: int, m: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r"""Weights ``(m,)`` along the half-spectrum axis: 1 at the DC (and even-n Nyquist) bins, 2 elsewhere.

    They give the adjoints (vector-Jacobian products, PyTorch's complex convention) of the real FFTs
    over ``d`` axes with :math:`n = \prod_i n_i` points:

    .. math::
        \mathrm{rfftn}^*(\bar y) = n\, \mathrm{irfftn}(\bar y / w), \qquad
        \mathrm{irfftn}^*(\bar x) = w \odot \mathrm{rfftn}(\bar x) / n,

    i.e. :math:`\mathrm{rfftn}^*(\bar y)_j = \mathrm{Re} \sum_k \bar y_k e^{i k \cdot x_j}` over the stored bins.
    """
    w = torch.full((m,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if n_last % 2 == 0:
        w[-1] = 1.0
    return w.to(device=device, dtype=dtype)


class ETDRK4Step(torch.autograd.Function):
    """One :class:`ETDRK4` step as a single autograd node with its exact discrete adjoint.

    ``nonlinear`` provides ``forward(v) -> (N(v), saved)`` and ``vjp(saved, Nbar) -> vbar``.
    Backward sweeps the stages in reverse; every diagonal coefficient :math:`c` contributes
    :math:`\\bar v \\mathrel{+}= \\bar c\\,\\bar z` (complex conjugate), so a gradient costs one
    forward step plus four nonlinear-term adjoints, instead of autograd's ~30 recorded nodes per step.
    The nonlinear term must not depend on time.
    """

    @staticmethod
    def forward(ctx, v, stepper: ETDRK4, nonlinear):
        E, E2, Q = stepper.E, stepper.E2, stepper.Q
        Nv, sv = nonlinear.forward(v)
        a = E2 * v + Q * Nv
        Na, sa = nonlinear.forward(a)
        b = E2 * v + Q * Na
        Nb, sb = nonlinear.forward(b)
        c = E2 * a + Q * (2 * Nb - Nv)
        Nc, sc = nonlinear.forward(c)
        ctx.stepper, ctx.nonlinear, ctx.saved = stepper, nonlinear, (sv, sa, sb, sc)
        return E * v + stepper.f1 * Nv + 2 * stepper.f2 * (Na + Nb) + stepper.f3 * Nc

    @staticmethod
    def backward(ctx, ybar):
        st, nl = ctx.stepper, ctx.nonlinear
        sv, sa, sb, sc = ctx.saved
        cj = st.conj
        E, E2, Q = cj["E"], cj["E2"], cj["Q"]
        vbar = E * ybar
        Nvbar = cj["f1"] * ybar
        Nabar = Nbbar = 2 * cj["f2"] * ybar
        cbar = nl.vjp(sc, cj["f3"] * ybar)
        abar = E2 * cbar
        Nbbar = Nbbar + 2 * Q * cbar
        Nvbar = Nvbar - Q * cbar
        bbar = nl.vjp(sb, Nbbar)
        vbar = vbar + E2 * bbar
        Nabar = Nabar + Q * bbar
        abar = abar + nl.vjp(sa, Nabar)
        vbar = vbar + E2 * abar
        Nvbar = Nvbar + Q * abar
        vbar = vbar + nl.vjp(sv, Nvbar)
        return vbar, None, None
