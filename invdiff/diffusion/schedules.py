"""Noise levels: the sigma grids solvers step over, and VP schedules as VE-equivalent sigma(t).

invdiff works in "VE" variables ``x = x0 + sigma * eps`` (EDM, Karras et al. 2022). A
variance-preserving (VP) diffusion ``x_vp = alpha(t) x0 + sigma_vp(t) eps`` with
``alpha^2 + sigma_vp^2 = 1`` is the same process after the change of variables

.. math::
    x = x_{vp} / \\alpha(t), \\qquad
    \\sigma(t) = \\frac{\\sigma_{vp}(t)}{\\alpha(t)} = \\sqrt{\\frac{1 - \\bar\\alpha(t)}{\\bar\\alpha(t)}},
    \\qquad \\alpha(t) = \\sqrt{\\bar\\alpha(t)} = \\frac{1}{\\sqrt{1 + \\sigma(t)^2}},

so every VP model has a VE-equivalent noise level and every solver here works for both.

Every ``*_sigmas(n, ...)`` function returns a descending 1-D float64 tensor of ``n + 1`` values
whose last entry is 0 (k-diffusion's ``append_zero``), or the ``n`` positive values with
``append_zero=False``.

Example
-------
>>> s = karras_sigmas(4, sigma_min=0.002, sigma_max=80.0)
>>> s.shape, float(s[0]), float(s[-1])
(torch.Size([5]), 80.0, 0.0)
>>> vp = VPSchedule("linear")
>>> t = torch.tensor([0.3, 0.9])
>>> torch.allclose(vp.t(vp.sigma(t)), t)
True
"""
from __future__ import annotations

import math

import torch

from invdiff.diffusion.denoiser import expand_sigma

__all__ = ["karras_sigmas", "loglinear_sigmas", "ddpm_sigmas", "vp_sigmas", "VPSchedule"]


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int (number of steps), got {n!r}")


def _check_range(sigma_min: float, sigma_max: float) -> None:
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max)) or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"expected 0 < sigma_min <= sigma_max < inf, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def _finish(sigmas: torch.Tensor, append_zero: bool, device, dtype) -> torch.Tensor:
    if append_zero:
        sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype or torch.float64)


def karras_sigmas(
    n: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    append_zero: bool = True,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """The noise levels of EDM (Karras et al. 2022, eq. 5), evenly spaced in ``sigma^(1/rho)``.

    .. math::
        \\sigma_i = \\Big(\\sigma_{max}^{1/\\rho} + \\tfrac{i}{n-1}
        \\big(\\sigma_{min}^{1/\\rho} - \\sigma_{max}^{1/\\rho}\\big)\\Big)^{\\rho},
        \\quad i = 0, \\dots, n-1, \\qquad \\sigma_n = 0.

    >>> karras_sigmas(2, 1.0, 4.0, rho=1.0)
    tensor([4., 1., 0.], dtype=torch.float64)
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    if not rho > 0:
        raise ValueError(f"rho: expected > 0, got {rho}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho, append_zero, device, dtype)


def loglinear_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, append_zero: bool = True, device=None, dtype=None
) -> torch.Tensor:
    """Noise levels evenly spaced in ``log sigma`` (equal steps in DPM-Solver's ``lambda = -log sigma``).

    .. math::
        \\sigma_i = \\sigma_{max} (\\sigma_{min} / \\sigma_{max})^{i / (n-1)}, \\quad i = 0, \\dots, n-1.

    >>> [round(s, 9) for s in loglinear_sigmas(3, 1.0, 100.0).tolist()]
    [100.0, 10.0, 1.0, 0.0]
    """
    _check_n(n)
    _check_range(sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    log_s = math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max))
    return _finish(log_s.exp(), append_zero, device, dtype)


class VPSchedule:
    """A variance-preserving noise schedule, expressed as its VE-equivalent ``sigma(t)``.

    Continuous time ``t in (0, 1]`` (Song et al. 2021; DPM-Solver's ``NoiseScheduleVP``):

    - ``"linear"`` betas ``beta(t) = beta_min + t (beta_max - beta_min)`` (DDPM, Ho et al. 2020):

      .. math:: \\log \\bar\\alpha(t) = -\\tfrac12 t^2 (\\beta_{max} - \\beta_{min}) - t \\beta_{min}

    - ``"cosine"`` (Nichol & Dhariwal 2021), with offset ``s``:

      .. math:: \\bar\\alpha(t) = \\frac{f(t)}{f(0)}, \\qquad f(t) = \\cos^2\\Big(\\frac{t + s}{1 + s} \\frac{\\pi}{2}\\Big)

    Then ``alpha(t) = sqrt(abar(t))`` is the VP scaling and
    ``sigma(t) = sqrt((1 - abar) / abar)`` the VE-equivalent noise level.

    The discrete DDPM schedule with ``T`` steps (``discrete_alphas_cumprod``) uses
    ``beta_i = linspace(beta_min / T, beta_max / T, T)`` for ``"linear"`` (1e-4 .. 0.02 for the
    defaults and T = 1000) and ``beta_i = min(1 - abar(i+1/T) / abar(i/T), 0.999)`` for
    ``"cosine"``.

    Example
    -------
    >>> vp = VPSchedule("cosine")
    >>> x_vp = torch.randn(2, 3)
    >>> t = torch.tensor([0.5, 0.7])
    >>> torch.allclose(vp.to_vp(vp.to_ve(x_vp, t), t), x_vp)
    True
    """

    def __init__(
        self,
        kind: str = "linear",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        cosine_s: float = 0.008,
        T: int = 1000,
    ) -> None:
        if kind not in ("linear", "cosine"):
            raise ValueError(f"kind: expected 'linear' or 'cosine', got {kind!r}")
        if not 0 < beta_min < beta_max:
            raise ValueError(f"expected 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        if not cosine_s >= 0:
            raise ValueError(f"cosine_s: expected >= 0, got {cosine_s}")
        _check_n(T)
        self.kind, self.beta_min, self.beta_max, self.cosine_s, self.T = kind, beta_min, beta_max, cosine_s, T

    def __repr__(self) -> str:
        if self.kind == "linear":
            return f"VPSchedule('linear', beta_min={self.beta_min}, beta_max={self.beta_max}, T={self.T})"
        return f"VPSchedule('cosine', cosine_s={self.cosine_s}, T={self.T})"

    # -- continuous time ---------------------------------------------------------------------
    def _angle(self, t: torch.Tensor) -> torch.Tensor:
        return (t + self.cosine_s) / (1 + self.cosine_s) * (math.pi / 2)

    def log_alpha_bar(self, t: float | torch.Tensor) -> torch.Tensor:
        """``log abar(t)`` (float64 for Python floats, else in ``t``'s dtype)."""
        t = torch.as_tensor(t, dtype=None if torch.is_tensor(t) else torch.float64)
        if self.kind == "linear":
            return -0.5 * t**2 * (self.beta_max - self.beta_min) - t * self.beta_min
        log_f0 = math.log(math.cos(self.cosine_s / (1 + self.cosine_s) * math.pi / 2))
        return 2 * (torch.log(torch.cos(self._angle(t))) - log_f0)

    def alpha(self, t: float | torch.Tensor) -> torch.Tensor:
        """The VP scaling ``alpha(t) = sqrt(abar(t)) = 1 / sqrt(1 + sigma(t)^2)``."""
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        """The VE-equivalent noise level ``sigma(t) = sqrt(1 / abar(t) - 1)`` (stable via expm1)."""
        return torch.sqrt(torch.expm1(-self.log_alpha_bar(t)))

    def t(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`sigma`: the time ``t`` at which ``sigma(t) = sigma``.

        With ``L = -log abar = log(1 + sigma^2)``: for ``"linear"`` the positive root of
        ``(beta_max - beta_min) t^2 / 2 + beta_min t - L = 0``, written without cancellation as
        ``t = 2 L / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) L))``; for ``"cosine"``
        ``t = (1 + s) (2/pi) arccos(cos(s pi / (2 (1 + s))) / sqrt(1 + sigma^2)) - s``.
        """
        sigma = torch.as_tensor(sigma, dtype=None if torch.is_tensor(sigma) else torch.float64)
        if bool((sigma < 0).any()):
            raise ValueError(f"sigma: expected >= 0, got {sigma}")
        L = torch.log1p(sigma**2)
        if self.kind == "linear":
            db = self.beta_max - self.beta_min
            return 2 * L / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * db * L))
        c0 = math.cos(self.cosine_s / (1 + self.cosine_s) * math.pi / 2)
        return (1 + self.cosine_s) * (2 / math.pi) * torch.arccos(c0 * torch.exp(-0.5 * L)) - self.cosine_s

    def to_ve(self, x_vp: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``x = x_vp / alpha(t)``; ``t`` a float or a ``(B,)`` tensor."""
        return x_vp / expand_sigma(self.alpha(t), x_vp)

    def to_vp(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``x_vp = alpha(t) x``; ``t`` a float or a ``(B,)`` tensor."""
        return x * expand_sigma(self.alpha(t), x)

    # -- discrete DDPM -----------------------------------------------------------------------
    def discrete_alphas_cumprod(self) -> torch.Tensor:
        """``abar_i`` for the ``T`` training steps of a discrete DDPM (float64, index 0 = least noise)."""
        T = self.T
        if self.kind == "linear":
            betas = torch.linspace(self.beta_min / T, self.beta_max / T, T, dtype=torch.float64)
        else:
            t = torch.arange(T + 1, dtype=torch.float64) / T
            abar = self.log_alpha_bar(t).exp()
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        return torch.cumprod(1 - betas, dim=0)

    def discrete_sigmas(self) -> torch.Tensor:
        """The VE-equivalent noise level of each DDPM index, ``sqrt((1 - abar_i) / abar_i)`` (ascending)."""
        abar = self.discrete_alphas_cumprod()
        return torch.sqrt((1 - abar) / abar)

    def _log_discrete_sigmas(self, device) -> torch.Tensor:
        cache = self.__dict__.setdefault("_log_sigmas_cache", {})
        if device not in cache:
            cache[device] = self.discrete_sigmas().log().to(device)
        return cache[device]

    def ddpm_index(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """The (fractional) DDPM index of a noise level: linear interpolation in ``log sigma``
        between the discrete levels (k-diffusion's ``sigma_to_t``), clamped to ``[0, T-1]``."""
        sigma = torch.as_tensor(sigma)
        log_s = self._log_discrete_sigmas(sigma.device)
        ls = sigma.to(torch.float64).clamp(min=1e-300).log()
        hi = torch.searchsorted(log_s, ls.reshape(-1).contiguous()).clamp(1, self.T - 1).reshape(ls.shape)
        lo = hi - 1
        w = ((ls - log_s[lo]) / (log_s[hi] - log_s[lo])).clamp(0, 1)
        dtype = sigma.dtype if sigma.is_floating_point() else torch.get_default_dtype()
        return (lo + w).to(dtype)

    def __eq__(self, other) -> bool:
        return isinstance(other, VPSchedule) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def vp_sigmas(
    n: int,
    schedule: VPSchedule | None = None,
    t_min: float = 1e-3,
    t_max: float = 1.0,
    append_zero: bool = True,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """Noise levels of a continuous VP schedule at ``n`` times evenly spaced from ``t_max`` to
    ``t_min`` (DPM-Solver's ``"time_uniform"`` skip type): ``sigma(t_i)``.

    >>> s = vp_sigmas(10, VPSchedule("linear"))
    >>> bool((s[:-1] > s[1:]).all())
    True
    """
    _check_n(n)
    schedule = schedule or VPSchedule()
    if not 0 < t_min < t_max <= 1:
        raise ValueError(f"expected 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if schedule.kind == "cosine" and t_max >= 1:
        raise ValueError("the cosine schedule has sigma(1) = inf: use t_max < 1 (e.g. 0.999)")
    t = torch.linspace(t_max, t_min, n, dtype=torch.float64) if n > 1 else torch.tensor([t_max], dtype=torch.float64)
    return _finish(schedule.sigma(t), append_zero, device, dtype)


def ddpm_sigmas(
    n: int, schedule: VPSchedule | None = None, append_zero: bool = True, device=None, dtype=None
) -> torch.Tensor:
    """``n`` noise levels of a discrete DDPM (``T`` training steps), from index ``T-1`` down to 0.

    The indices are ``round(linspace(T-1, 0, n))`` (the "trailing" spacing of Lin et al. 2024,
    which keeps the highest noise level); ``n = T`` gives every training level, the setting of
    the original DDPM sampler.

    >>> s = ddpm_sigmas(1000)
    >>> s.shape, round(float(s[0]), 1), round(float(s[-2]), 4)
    (torch.Size([1001]), 157.4, 0.01)
    """
    _check_n(n)
    schedule = schedule or VPSchedule()
    if n > schedule.T:
        raise ValueError(f"n: expected at most T={schedule.T} steps, got {n}")
    idx = torch.linspace(schedule.T - 1, 0, n, dtype=torch.float64).round().long()
    return _finish(schedule.discrete_sigmas()[idx], append_zero, device, dtype)
