"""Unconditional samplers over a denoiser ``D(x, sigma)``: ODE and ancestral SDE solvers.

All methods work in VE variables ``x = x0 + sigma * eps`` (any VP model is wrapped once by
:mod:`invdiff.diffusion.parameterization`) and integrate the probability-flow ODE of
Karras et al. (2022, eq. 4),

.. math::
    \\frac{dx}{d\\sigma} = \\frac{x - D(x, \\sigma)}{\\sigma},

or sample its reverse SDE ancestrally. In the half log-SNR ``lambda = -log sigma`` of
DPM-Solver (Lu et al. 2022) the exact solution from ``sigma`` to ``sigma' < sigma`` is

.. math::
    x(\\sigma') = \\frac{\\sigma'}{\\sigma} x(\\sigma)
    + \\sigma' \\int_{\\lambda}^{\\lambda'} e^{\\ell} D(x_\\ell, \\ell)\\, d\\ell,

which the exponential integrators (``ddim``, ``dpmpp_*``, ``unipc``) approximate by
polynomials in ``lambda`` through past values of ``D``.

Each method is a step object (as in k-diffusion's ``sampling.py``, but one step at a time so
that posterior samplers can act around each step). The caller evaluates the network:

>>> import torch
>>> from invdiff.diffusion.schedules import karras_sigmas
>>> D = lambda x, sigma: 0.5 * x                          # any denoiser D(x, sigma)
>>> sigmas = karras_sigmas(10, 0.01, 10.0)
>>> solver = make_solver("dpmpp_2m", sigmas)
>>> x = 10.0 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
>>> for i in range(solver.n_steps):
...     x = solver.step(i, x, D(x, solver.sigmas[i]))     # x at sigmas[i] -> x at sigmas[i+1]
>>> out = sample(D, 10.0 * torch.randn(4, 2), sigmas, method="heun")   # the same loop
>>> out.x.shape, out.nfe
(torch.Size([4, 2]), 19)

``solver.step(i, x, x0_hat, denoise=None, generator=None)`` takes ``x`` at ``sigmas[i]`` and
``x0_hat = D(x, sigmas[i])`` and returns ``x`` at ``sigmas[i+1]``; methods with extra
evaluations per step (``heun``) call ``denoise(x, sigma: float)``; multistep methods keep their
history inside the object (``i = 0`` starts a new trajectory) and need ``i = 0, 1, 2, ...`` in
order. A step to ``sigma = 0`` returns ``x0_hat`` for every method except ``heun`` and
``euler`` (an Euler step to 0, which is the same thing).

Methods (``make_solver(method, sigmas, **opts)``):

===================  =======  ===========  ===================================================
method               order    NFE / step   reference
===================  =======  ===========  ===================================================
``euler``            1        1            Karras et al. 2022, eq. 4
``heun``             2        2 (1 last)   Karras et al. 2022, Alg. 1
``ddim``             1        1            Song et al. 2021 (``eta``; eta = 0 is ``euler``)
``dpmpp_2m``         2        1            Lu et al. 2022b, DPM-Solver++(2M)
``dpmpp_3m``         3        1            Lu et al. 2022b, DPM-Solver++(3M)
``unipc``            p + 1    1            Zhao et al. 2023, UniP-p + UniC (``order`` = p)
``ddpm``             SDE      1            Ho et al. 2020, ancestral (posterior variance)
``euler_ancestral``  SDE      1            k-diffusion (``eta``, ``s_noise``)
===================  =======  ===========  ===================================================
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from invdiff.utils.checks import check_finite, check_floating
from invdiff.utils.progress import progress as _progress
from invdiff.utils.random import randn_like

__all__ = [
    "SolverResult",
    "Solver",
    "Euler",
    "Heun",
    "Ancestral",
    "DDPM",
    "DPMSolverPP",
    "UniPC",
    "METHODS",
    "make_solver",
    "sample",
    "ancestral_sigmas",
]

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class SolverResult:
    """The output of :func:`sample`: the final state ``x`` (at ``sigmas[-1]``) and the number of
    denoiser evaluations ``nfe`` spent (per sample of the batch)."""

    x: torch.Tensor
    nfe: int


def _check_sigmas(sigmas) -> list[float]:
    """Noise levels as Python floats: a 1-D, strictly descending sequence of >= 2 finite values >= 0."""
    if torch.is_tensor(sigmas):
        if sigmas.is_complex():
            raise TypeError(f"sigmas: expected real values, got dtype {sigmas.dtype}")
        s = sigmas.detach().to("cpu", torch.float64)
    else:
        try:
            s = torch.as_tensor(sigmas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"sigmas: expected a real 1-D tensor or sequence of numbers, got {sigmas!r}") from e
    if s.ndim != 1 or s.numel() < 2:
        raise ValueError(f"sigmas: expected a 1-D tensor with at least 2 entries, got shape {tuple(s.shape)}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        bad = int((~torch.isfinite(s) | (s < 0)).nonzero()[0])
        raise ValueError(f"sigmas: expected finite values >= 0, got sigmas[{bad}] = {s[bad].item()}")
    if not bool((s[1:] < s[:-1]).all()):
        bad = int((s[1:] >= s[:-1]).nonzero()[0])
        raise ValueError(
            f"sigmas: expected strictly descending values (sigma_max first), got "
            f"sigmas[{bad}] = {s[bad].item()} <= sigmas[{bad + 1}] = {s[bad + 1].item()}"
        )
    return s.tolist()


def ancestral_sigmas(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step ``sigma -> sigma_next`` into a deterministic step to ``sigma_down`` and fresh
    noise of std ``sigma_up`` (k-diffusion's ``get_ancestral_step``), with
    ``sigma_down^2 + sigma_up^2 = sigma_next^2`` and

    .. math::
        \\sigma_{up} = \\min\\Big(\\sigma',\\ \\eta \\frac{\\sigma'}{\\sigma}\\sqrt{\\sigma^2 - \\sigma'^2}\\Big).

    ``eta = 1`` is the exact Gaussian transition of DDPM; the DDIM noise of Song et al. (2021,
    eq. 16) divided by ``alpha_{t-1}`` is exactly ``eta * sigma' sqrt(sigma^2 - sigma'^2) / sigma``.

    >>> ancestral_sigmas(2.0, 1.0, eta=0.0)
    (1.0, 0.0)
    """
    if not eta >= 0:
        raise ValueError(f"eta: expected >= 0, got {eta}")
    sigma_up = min(sigma_next, eta * sigma_next / sigma * math.sqrt(sigma**2 - sigma_next**2))
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


class Solver:
    """Base of the step objects: holds the noise levels and checks the arguments of :meth:`step`.

    :param sigmas: descending noise levels ``sigma_0 > ... > sigma_N >= 0`` (tensor or sequence).
    Attributes: ``sigmas`` (list of floats), ``n_steps = N``, ``nfe_per_step``, ``stochastic``.
    """

    name = "solver"
    nfe_per_step = 1
    stochastic = False

    def __init__(self, sigmas: torch.Tensor | Sequence[float]) -> None:
        self.sigmas = _check_sigmas(sigmas)
        self.n_steps = len(self.sigmas) - 1
        self._last_i: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_steps={self.n_steps}, sigma_max={self.sigmas[0]:.4g}, sigma_min={self.sigmas[-1]:.4g})"

    def reset(self) -> None:
        """Forget the history of a multistep method (called automatically at ``i = 0``)."""
        self._last_i = None

    def _begin(self, i: int, x: torch.Tensor, x0_hat: torch.Tensor, sequential: bool = False) -> tuple[float, float]:
        given = i
        try:
            i = operator.index(i)  # ints, numpy ints, 0-d integer tensors
        except TypeError:
            i = None
        if i is None or isinstance(given, bool) or not 0 <= i < self.n_steps:
            raise ValueError(f"i: expected an int step index in [0, {self.n_steps}), got {given!r}")
        if not isinstance(x, torch.Tensor) or not isinstance(x0_hat, torch.Tensor):
            raise TypeError("x and x0_hat: expected torch.Tensors")
        if x0_hat.shape != x.shape:
            raise ValueError(f"x0_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x0_hat.shape)}")
        if i == 0:
            self.reset()
        elif sequential and self._last_i != i - 1:
            raise ValueError(
                f"{self.name} is a multistep method: steps must run in order i = 0, 1, 2, ...; "
                f"got i={i} after i={self._last_i}"
            )
        self._last_i = i
        return self.sigmas[i], self.sigmas[i + 1]

    def step(
        self,
        i: int,
        x: torch.Tensor,
        x0_hat: torch.Tensor,
        denoise: Denoise | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Advance ``x`` from ``sigmas[i]`` to ``sigmas[i+1]`` given ``x0_hat = D(x, sigmas[i])``."""
        raise NotImplementedError

    def transition(self, i: int, x: torch.Tensor, x0_hat: torch.Tensor,
                   denoise: Denoise | None = None) -> tuple[torch.Tensor, float]:
        """The step as a Gaussian kernel: ``(mean, std)`` with
        :math:`x_{i+1} \\sim \\mathcal N(\\mathrm{mean}, \\mathrm{std}^2 I)` given ``x0_hat``.

        Deterministic methods return ``(step(...), 0.0)``; stochastic ones (``ddpm``, ``ddim``
        with ``eta > 0``) their exact kernel, so that SMC samplers reuse the solvers' transitions
        instead of re-deriving them. Same call contract as :meth:`step`.
        """
        if self.stochastic:  # pragma: no cover - every stochastic solver overrides this
            raise NotImplementedError(f"{self.name}: no Gaussian transition")
        return self.step(i, x, x0_hat, denoise=denoise), 0.0

    def x0_weight(self, i: int) -> float:
        """The weight of ``x0_hat`` in the transition's mean, ``mean = (1 - w) x + w x0_hat`` for
        one-step methods: an error of variance ``v`` in ``x0_hat`` adds ``w^2 v`` to the kernel's
        variance (used by SMC's analytic variance). Multistep methods: the current term only."""
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        return 1.0 - sigma_next / sigma


class Euler(Solver):
    """Euler's method for the probability-flow ODE (Karras et al. 2022, eq. 4 with ``sigma(t) = t``).

    .. math::
        d_i = \\frac{x_i - D(x_i, \\sigma_i)}{\\sigma_i}, \\qquad x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i) d_i.

    In VE variables this is exactly DDIM with ``eta = 0`` and first-order DPM-Solver(++).
    """

    name = "euler"

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        sigma, sigma_next = self._begin(i, x, x0_hat)
        d = (x - x0_hat) / sigma
        return x + (sigma_next - sigma) * d


class Heun(Solver):
    """Heun's second-order method of EDM (Karras et al. 2022, Algorithm 1, deterministic).

    .. math::
        \\tilde x = x_i + (\\sigma_{i+1} - \\sigma_i) d_i, \\qquad
        x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i) \\tfrac12 \\big(d_i + \\tilde d\\big),
        \\qquad \\tilde d = \\frac{\\tilde x - D(\\tilde x, \\sigma_{i+1})}{\\sigma_{i+1}},

    except for a step to ``sigma = 0``, which is the Euler step. Needs ``denoise``.
    """

    name = "heun"
    nfe_per_step = 2

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        sigma, sigma_next = self._begin(i, x, x0_hat)
        d = (x - x0_hat) / sigma
        x_euler = x + (sigma_next - sigma) * d
        if sigma_next == 0:
            return x_euler
        if denoise is None:
            raise ValueError("heun needs denoise(x, sigma) for its second evaluation; got denoise=None")
        d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
        return x + (sigma_next - sigma) * (d + d_next) / 2


class Ancestral(Solver):
    """DDIM with ``eta`` (Song et al. 2021) written as k-diffusion's Euler ancestral step.

    An Euler step to ``sigma_down`` followed by fresh noise of std ``sigma_up``
    (:func:`ancestral_sigmas`):

    .. math::
        x_{i+1} = x_i + (\\sigma_{down} - \\sigma_i) d_i + s_{noise}\\, \\sigma_{up} z
        = \\hat x_0 + \\sigma_{down} \\hat\\epsilon + s_{noise}\\, \\sigma_{up} z,
        \\qquad \\hat\\epsilon = d_i,\\ z \\sim \\mathcal N(0, I),

    which is DDIM's update (eq. 12 of Song et al.) divided by ``alpha_{t-1}``. ``eta = 0``:
    deterministic DDIM (= ``euler``); ``eta = 1``: the DDPM posterior (= ``ddpm``).
    Registered as ``ddim`` (default ``eta = 0``) and ``euler_ancestral`` (default ``eta = 1``).
    """

    name = "ancestral"

    def __init__(self, sigmas, eta: float = 1.0, s_noise: float = 1.0) -> None:
        super().__init__(sigmas)
        if not (isinstance(eta, (int, float)) and eta >= 0):
            raise ValueError(f"eta: expected a number >= 0, got {eta!r}")
        if not (isinstance(s_noise, (int, float)) and s_noise >= 0):
            raise ValueError(f"s_noise: expected a number >= 0, got {s_noise!r}")
        self.eta, self.s_noise = float(eta), float(s_noise)
        self.stochastic = self.eta > 0 and self.s_noise > 0

    def transition(self, i, x, x0_hat, denoise=None):
        """``mean = x0_hat + (sigma_down / sigma) (x - x0_hat)``, ``std = s_noise * sigma_up``."""
        sigma, sigma_next = self._begin(i, x, x0_hat)
        sigma_down, sigma_up = ancestral_sigmas(sigma, sigma_next, self.eta)
        return x0_hat + (sigma_down / sigma) * (x - x0_hat), self.s_noise * sigma_up

    def x0_weight(self, i):
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        return 1.0 - ancestral_sigmas(sigma, sigma_next, self.eta)[0] / sigma

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        mean, std = self.transition(i, x, x0_hat)
        return mean + std * randn_like(x, generator) if std > 0 else mean


class DDPM(Solver):
    """Ancestral DDPM sampling (Ho et al. 2020), as the exact Gaussian transition in VE variables.

    The forward process is Markov, ``x_sigma = x_{sigma'} + sqrt(sigma^2 - sigma'^2) n``, so given
    ``x0`` the previous level is Gaussian (DDPM's ``q(x_{t-1} | x_t, x_0)`` with variance
    ``beta_tilde``, divided by ``alpha_{t-1}``):

    .. math::
        x_{i+1} = \\hat x_0 + \\frac{\\sigma_{i+1}^2}{\\sigma_i^2} (x_i - \\hat x_0)
        + \\sigma_{i+1} \\sqrt{1 - \\frac{\\sigma_{i+1}^2}{\\sigma_i^2}}\\; z .
    """

    name = "ddpm"
    stochastic = True

    def transition(self, i, x, x0_hat, denoise=None):
        sigma, sigma_next = self._begin(i, x, x0_hat)
        r2 = (sigma_next / sigma) ** 2
        return x0_hat + r2 * (x - x0_hat), sigma_next * math.sqrt(1 - r2)

    def x0_weight(self, i):
        return 1.0 - (self.sigmas[i + 1] / self.sigmas[i]) ** 2

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        mean, std = self.transition(i, x, x0_hat)
        return mean + std * randn_like(x, generator) if std > 0 else mean


def _final_order(order: int, i: int, n_steps: int, lower_order_final: bool) -> int:
    """Order of a multistep method at step ``i``: warm up from 1, and (``lower_order_final``,
    fewer than 15 steps, as diffusers) lower the order of the last steps so that it never uses
    more steps than remain."""
    order = min(order, i + 1)
    if lower_order_final and n_steps < 15:
        order = min(order, n_steps - i)
    return order


class DPMSolverPP(Solver):
    """DPM-Solver++ multistep (Lu et al. 2022b, Algorithm 2 and the 3M update of the official code).

    With ``lambda = -log sigma``, ``h = lambda_{i+1} - lambda_i``, ``phi_1 = expm1(-h)`` and the
    data predictions ``m_0 = D(x_i)``, ``m_1``, ``m_2`` of the last steps
    (``r_0 = h_{i-1} / h``, ``r_1 = h_{i-2} / h``):

    .. math::
        x_{i+1} = \\frac{\\sigma_{i+1}}{\\sigma_i} x_i - \\phi_1 m_0
        \\;\\underbrace{- \\tfrac12 \\phi_1 D_1}_{\\text{2M}}
        \\;\\underbrace{+ \\phi_2 D_1 - 2 \\phi_3 D_2}_{\\text{3M}},

    with ``D_1 = (m_0 - m_1) / r_0`` for 2M and, for 3M, ``D_1^{(0)} = (m_0 - m_1)/r_0``,
    ``D_1^{(1)} = (m_1 - m_2)/r_1``, ``D_1 = D_1^{(0)} + r_0 (D_1^{(0)} - D_1^{(1)}) / (r_0 + r_1)``,
    ``D_2 = (D_1^{(0)} - D_1^{(1)}) / (r_0 + r_1)``, ``phi_2 = phi_1 / h + 1``, ``phi_3 = phi_2 / h - 1/2``.
    Order 1 is DDIM. The first steps warm up with lower orders; a step to ``sigma = 0`` returns
    ``m_0`` (``h = inf``).

    .. note::
        The Taylor term of the exact solution is ``-phi_3 h^2 m''`` and ``D_2 = h^2 m'' / 2 + O(h^3)``,
        hence the factor 2 on ``phi_3 D_2``. The multistep third-order update of the official
        DPM-Solver code, diffusers and k-diffusion's ``dpmpp_3m_sde`` uses ``phi_3 D_2``; that
        leaves an ``O(h^3)`` local error, i.e. a second-order method (slope 2 against the exact
        Gaussian flow, where this version has slope 3: ``tests/test_solvers.py``). Results
        therefore differ from those libraries' 3M at the ``h^3`` level; ``reference_3m=True``
        reproduces them.

    :param order: 1, 2 or 3 (``dpmpp_2m``: 2, ``dpmpp_3m``: 3).
    :param lower_order_final: lower the order of the final steps when there are fewer than 15
        steps (stabilises very few steps, Lu et al. 2022b).
    :param reference_3m: use the reference code's third-order update ``- phi_3 D_2`` (second
        order, see the note), to reproduce the outputs of diffusers / k-diffusion.
    """

    name = "dpmpp"

    def __init__(self, sigmas, order: int = 2, lower_order_final: bool = True, reference_3m: bool = False) -> None:
        super().__init__(sigmas)
        if order not in (1, 2, 3):
            raise ValueError(f"order: expected 1, 2 or 3, got {order!r}")
        self.order, self.lower_order_final = order, bool(lower_order_final)
        self._d2_factor = 1.0 if reference_3m else 2.0
        self.name = f"dpmpp_{order}m"
        self._history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0_hat), newest last

    def reset(self) -> None:
        super().reset()
        self._history = []

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        sigma, sigma_next = self._begin(i, x, x0_hat, sequential=True)
        lam = -math.log(sigma)
        self._history = (self._history + [(lam, x0_hat)])[-self.order :]
        if sigma_next == 0:
            return x0_hat
        h = math.log(sigma / sigma_next)
        order = _final_order(self.order, i, self.n_steps, self.lower_order_final)
        phi_1 = math.expm1(-h)
        m0 = x0_hat
        x_next = (sigma_next / sigma) * x - phi_1 * m0
        if order == 2:
            lam_1, m1 = self._history[-2]
            r0 = (lam - lam_1) / h
            x_next = x_next - (0.5 * phi_1 / r0) * (m0 - m1)
        elif order == 3:
            (lam_2, m2), (lam_1, m1) = self._history[-3], self._history[-2]
            r0, r1 = (lam - lam_1) / h, (lam_1 - lam_2) / h
            d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = phi_1 / h + 1
            phi_3 = phi_2 / h - 0.5
            x_next = x_next + phi_2 * d1 - (self._d2_factor * phi_3) * d2
        return x_next


def _unipc_coefficients(h: float, rks: list[float], order: int, variant: str):
    """UniPC's linear system (Zhao et al. 2023, Alg. 2/3 for data prediction):
    ``R[k-1, j] = r_j^(k-1)`` and ``b[k-1] = phi_{k+1}(h) k! / B(h)`` for k = 1..order, with
    ``h_phi_1 = expm1(-h)``; ``B(h) = -h`` (``bh1``) or ``expm1(-h)`` (``bh2``)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    B_h = hh if variant == "bh1" else math.expm1(hh)
    R, b = [], []
    for k in range(1, order + 1):
        R.append([r ** (k - 1) for r in rks])
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.tensor(R, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), B_h, h_phi_1


class UniPC(Solver):
    """UniPC (Zhao et al. 2023): the UniP-p predictor and the UniC corrector, data prediction.

    Predictor from ``x_i`` (``h = lambda_{i+1} - lambda_i``, ``r_k = (lambda_{i-k} - lambda_i) / h``,
    ``D_k = (m_{i-k} - m_i) / r_k``):

    .. math::
        \\tilde x_{i+1} = \\frac{\\sigma_{i+1}}{\\sigma_i} x_i - (e^{-h} - 1)\\, m_i
        - B(h) \\sum_{k=1}^{p-1} \\rho^p_k D_k .

    Corrector, once ``m_{i+1} = D(\\tilde x_{i+1})`` is known (no extra evaluation: it is the next
    step's ``x0_hat``), with ``D_p = m_{i+1} - m_i`` and ``r_p = 1``:

    .. math::
        x^c_{i+1} = \\frac{\\sigma_{i+1}}{\\sigma_i} x_i - (e^{-h} - 1)\\, m_i
        - B(h) \\Big(\\sum_{k=1}^{p-1} \\rho^c_k D_k + \\rho^c_p D_p\\Big),

    ``rho`` solving ``R rho = b`` (:func:`_unipc_coefficients`; ``rho^p = 1/2`` for p = 2 and
    ``rho^c = 1/2`` for p = 1, as the reference code). ``B(h) = expm1(-h)`` (``variant="bh2"``,
    default) or ``-h`` (``"bh1"``). With the corrector UniPC-p has order p + 1.

    The corrector is applied as an increment, ``x_{i+1} <- x_{i+1} + (x^c_{i+1} - \\tilde x_{i+1})``,
    so a change made to ``x`` between steps (e.g. guidance by a posterior sampler) is kept; for
    the plain ODE this is exactly ``x^c_{i+1}``. A step to ``sigma = 0`` returns ``m_i``.

    :param order: p in {1, 2, 3} (UniP-p; with the corrector the method has order p + 1).
    :param variant: ``"bh1"`` (``B(h) = -h``) or ``"bh2"`` (``B(h) = expm1(-h)``).
    :param corrector: apply UniC (default True); False gives the plain UniP-p multistep method.
    :param lower_order_final: as :class:`DPMSolverPP`.
    """

    name = "unipc"

    def __init__(
        self, sigmas, order: int = 2, variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True
    ) -> None:
        super().__init__(sigmas)
        if order not in (1, 2, 3):
            raise ValueError(f"order: expected 1, 2 or 3, got {order!r}")
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant: expected 'bh1' or 'bh2', got {variant!r}")
        self.order, self.variant = order, variant
        self.corrector, self.lower_order_final = bool(corrector), bool(lower_order_final)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0_hat), newest last
        self._prev: tuple[int, torch.Tensor, torch.Tensor, int] | None = None  # (i, x_i, x_pred, order)

    def _differences(self, order: int, h: float):
        """``r_k`` and ``D_k`` for k = 1..order-1 from the history, relative to its newest entry."""
        lam0, m0 = self._history[-1]
        rks, D1s = [], []
        for k in range(1, order):
            lam_k, m_k = self._history[-1 - k]
            rk = (lam_k - lam0) / h
            rks.append(rk)
            D1s.append((m_k - m0) / rk)
        return rks, D1s

    def _predict(self, x: torch.Tensor, sigma: float, sigma_next: float, order: int) -> torch.Tensor:
        """UniP-order from ``x`` at ``sigma`` (the newest history entry) to ``sigma_next``."""
        h = math.log(sigma / sigma_next)
        rks, D1s = self._differences(order, h)
        R, b, B_h, h_phi_1 = _unipc_coefficients(h, rks + [1.0], order, self.variant)
        x_next = (sigma_next / sigma) * x - h_phi_1 * self._history[-1][1]
        if order == 2:
            x_next = x_next - (B_h * 0.5) * D1s[0]
        elif order == 3:
            rhos = torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
            x_next = x_next - B_h * sum(rho * D for rho, D in zip(rhos, D1s))
        return x_next

    def _correct(self, x: torch.Tensor, sigma: float, sigma_next: float, order: int, m_next: torch.Tensor):
        """UniC-order: the corrected value at ``sigma_next`` of the step from ``x`` at ``sigma``."""
        h = math.log(sigma / sigma_next)
        rks, D1s = self._differences(order, h)
        R, b, B_h, h_phi_1 = _unipc_coefficients(h, rks + [1.0], order, self.variant)
        rhos = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
        m0 = self._history[-1][1]
        res = rhos[-1] * (m_next - m0)
        for rho, D in zip(rhos[:-1], D1s):
            res = res + rho * D
        return (sigma_next / sigma) * x - h_phi_1 * m0 - B_h * res

    def step(self, i, x, x0_hat, denoise=None, generator=None):
        sigma, sigma_next = self._begin(i, x, x0_hat, sequential=True)
        if self.corrector and self._prev is not None:
            i_prev, x_prev, x_pred, order_prev = self._prev
            x_corr = self._correct(x_prev, self.sigmas[i_prev], sigma, order_prev, x0_hat)
            x = x + (x_corr - x_pred)
        self._history = (self._history + [(-math.log(sigma), x0_hat)])[-self.order :]
        if sigma_next == 0:
            self._prev = None
            return x0_hat
        order = _final_order(self.order, i, self.n_steps, self.lower_order_final)
        x_next = self._predict(x, sigma, sigma_next, order)
        self._prev = (i, x, x_next, order)
        return x_next


# name -> (class, default options)
METHODS: dict[str, tuple[type[Solver], dict]] = {
    "euler": (Euler, {}),
    "heun": (Heun, {}),
    "ddim": (Ancestral, {"eta": 0.0}),
    "euler_ancestral": (Ancestral, {"eta": 1.0}),
    "ddpm": (DDPM, {}),
    "dpmpp_2m": (DPMSolverPP, {"order": 2}),
    "dpmpp_3m": (DPMSolverPP, {"order": 3}),
    "unipc": (UniPC, {"order": 2}),
}


def make_solver(method: str, sigmas: torch.Tensor | Sequence[float], **opts) -> Solver:
    """The step object of ``method`` (see the module docstring) over the noise levels ``sigmas``.

    ``opts`` override the method's defaults, e.g. ``make_solver("ddim", s, eta=0.5)``,
    ``make_solver("unipc", s, order=3)``.

    >>> make_solver("dpmpp_3m", [10.0, 1.0, 0.1, 0.0]).nfe_per_step
    1
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    cls, defaults = METHODS[method]
    try:
        solver = cls(sigmas, **{**defaults, **opts})
    except TypeError as e:
        import inspect

        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "sigmas")]
        raise TypeError(f"{method}: unknown option(s) {sorted(opts)}; accepted: {allowed}") from e
    solver.name = method
    return solver


def sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    method: str = "heun",
    generator: torch.Generator | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    enable_grad: bool = False,
    cond: dict | None = None,
    **opts,
) -> SolverResult:
    """Solve from ``x`` at ``sigmas[0]`` (e.g. ``sigmas[0] * randn``) to ``sigmas[-1]`` with ``method``.

    The denoiser is called as ``denoiser(x, sigma)`` with ``sigma`` a ``(B,)`` tensor (so deepinv
    denoisers work unwrapped). ``callback`` receives ``{"i", "x", "sigma", "x0_hat"}`` after each
    evaluation at ``sigmas[i]``. Runs under ``torch.no_grad()`` unless ``enable_grad``.
    ``cond``: conditions of a conditional prior, passed as ``denoiser(x, sigma, **cond)``.

    :returns: :class:`SolverResult` ``(x, nfe)`` with ``nfe`` the denoiser calls per sample.

    >>> from invdiff.diffusion.schedules import karras_sigmas
    >>> out = sample(lambda x, s: torch.zeros_like(x), torch.ones(2, 3), karras_sigmas(5, 0.1, 1.0), "euler")
    >>> out.x.abs().max().item(), out.nfe     # D = 0: the ODE x' = x / sigma ends at x * 0 / 1
    (0.0, 5)
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser: expected a callable D(x, sigma), got {type(denoiser).__name__}")
    check_floating("x", x)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a batch of shape (B, ...) with B >= 1, got {tuple(x.shape)}")
    solver = make_solver(method, sigmas, **opts)
    check_finite("x", x)
    nfe = 0

    def denoise(x_: torch.Tensor, sigma: float) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        out = denoiser(x_, torch.full((x_.shape[0],), sigma, dtype=x_.dtype, device=x_.device), **(cond or {}))
        if not isinstance(out, torch.Tensor) or out.shape != x_.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"denoiser output: expected the shape of x {tuple(x_.shape)}, got {got}")
        return out

    with torch.set_grad_enabled(enable_grad):
        for i in _progress(range(solver.n_steps), enabled=progress, desc=method):
            x0_hat = denoise(x, solver.sigmas[i])
            if callback is not None:
                callback({"i": i, "x": x, "sigma": solver.sigmas[i], "x0_hat": x0_hat})
            x = solver.step(i, x, x0_hat, denoise=denoise, generator=generator)
    return SolverResult(x=x, nfe=nfe)
