"""Wrap a network trained in any parameterisation into the prior interface ``D(x, sigma)``.

This module is the only place in invdiff with the alpha/sigma algebra of networks (as the
official DPM-Solver's ``model_wrapper``): solvers and samplers see ``D(x, sigma)`` only.

With VE variables ``x = x0 + sigma eps`` and the equivalent VP variables
``x_vp = alpha x = alpha x0 + sigma_vp eps``, where ``alpha = 1 / sqrt(1 + sigma^2)`` and
``sigma_vp = alpha sigma`` (see :mod:`invdiff.diffusion.schedules`), a network ``F(x_in, t_in)``
with input ``x_in = x`` (``scaling="ve"``) or ``x_in = x_vp`` (``scaling="vp"``) predicting

- ``"x0"``:    the clean signal, :math:`D = F`;
- ``"eps"``:   the noise (Ho et al. 2020), :math:`D = x - \\sigma F`;
- ``"v"``:     :math:`v = \\alpha \\epsilon - \\sigma_{vp} x_0` (Salimans & Ho 2022), so
  :math:`D = \\alpha x_{vp} - \\sigma_{vp} F = \\alpha^2 x - \\alpha \\sigma F`;
- ``"score"``: the score of the noisy density of its own input variable,
  :math:`\\nabla_{x_{in}} \\log p(x_{in})`. Since :math:`\\nabla_{x} \\log p = \\alpha
  \\nabla_{x_{vp}} \\log p_{vp}`, :math:`D = x + \\sigma^2 c F` with ``c = 1`` (VE) or
  ``c = alpha`` (VP) (Tweedie).

The network's own time variable ``t_in`` (a ``(B,)`` tensor) is one of ``"sigma"``,
``"log_sigma"`` (EDM's :math:`c_{noise} = \\tfrac14 \\ln \\sigma`), ``"t"`` (continuous VP time
``schedule.t(sigma)``), ``"ddpm"`` (fractional DDPM index ``schedule.ddpm_index(sigma)``), or
any callable ``sigma -> t_in``.

A deepinv ``Denoiser`` (``forward(x, sigma)``, predicting x0 in VE variables) already is a
prior: use it without a wrapper.

Example
-------
>>> import torch
>>> from invdiff.diffusion.schedules import VPSchedule
>>> eps_net = lambda x_vp, t: torch.zeros_like(x_vp)      # a (useless) DDPM eps-network
>>> D = wrap(eps_net, prediction="eps", scaling="vp", time="ddpm", schedule=VPSchedule("linear"))
>>> D(torch.ones(2, 3), 0.5)                               # D = x - sigma * eps
tensor([[1., 1., 1.],
        [1., 1., 1.]])
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from invdiff.diffusion.denoiser import expand_sigma
from invdiff.diffusion.schedules import VPSchedule

__all__ = ["wrap", "Parameterized", "PREDICTIONS", "SCALINGS", "TIMES"]

PREDICTIONS = ("eps", "x0", "v", "score")
SCALINGS = ("ve", "vp")
TIMES = ("sigma", "log_sigma", "t", "ddpm")


class Parameterized(torch.nn.Module):
    """``D(x, sigma)`` from a network ``net(x_in, t_in)``; see the module docstring for the algebra.

    :param net: a callable ``net(x_in, t_in) -> tensor of x_in's shape`` (usually an ``nn.Module``,
        which is registered as a sub-module so ``.to(device)`` and ``.eval()`` reach it).
    :param prediction: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
    :param scaling: ``"ve"`` (the network sees ``x``) or ``"vp"`` (it sees ``x / sqrt(1 + sigma^2)``).
    :param time: ``"sigma"``, ``"log_sigma"``, ``"t"``, ``"ddpm"`` or a callable ``sigma -> t_in``.
    :param schedule: the :class:`VPSchedule` for ``time="t"`` / ``"ddpm"`` (default: linear, T=1000).
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        prediction: str = "eps",
        scaling: str = "ve",
        time: str | Callable[[torch.Tensor], torch.Tensor] = "sigma",
        schedule: VPSchedule | None = None,
    ) -> None:
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x, t), got {type(net).__name__}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling: expected one of {SCALINGS}, got {scaling!r}")
        if not callable(time) and time not in TIMES:
            raise ValueError(f"time: expected one of {TIMES} or a callable sigma -> t, got {time!r}")
        if schedule is not None and not isinstance(schedule, VPSchedule):
            raise TypeError(f"schedule: expected a VPSchedule, got {type(schedule).__name__}")
        self.net = net
        self.prediction, self.scaling, self.time = prediction, scaling, time
        self.schedule = schedule or VPSchedule()

    def extra_repr(self) -> str:
        t = self.time if isinstance(self.time, str) else getattr(self.time, "__name__", "callable")
        return f"prediction={self.prediction!r}, scaling={self.scaling!r}, time={t!r}, schedule={self.schedule}"

    def network_time(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's time input for noise levels ``sigma`` (a ``(B,)`` tensor)."""
        if callable(self.time):
            return self.time(sigma)
        if self.time == "sigma":
            return sigma
        if self.time == "log_sigma":
            return sigma.log() / 4
        if self.time == "t":
            return self.schedule.t(sigma).to(sigma.dtype)
        return self.schedule.ddpm_index(sigma)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``D(x, sigma)``: the network's prediction turned into the posterior mean of ``x0``."""
        s = expand_sigma(sigma, x)  # (B, 1, ..., 1), x's dtype and device
        if bool((s < 0).any()):
            raise ValueError(f"sigma: expected >= 0, got {sigma}")
        alpha = torch.rsqrt(1 + s**2) if self.scaling == "vp" or self.prediction == "v" else None
        x_in = alpha * x if self.scaling == "vp" else x
        out = self.net(x_in, self.network_time(s.reshape(-1)))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"net output: expected shape {tuple(x.shape)} (the input's), got {got}")
        if self.prediction == "x0":
            return out
        if self.prediction == "eps":
            return x - s * out
        if self.prediction == "v":
            return alpha**2 * x - alpha * s * out
        score_x = out if self.scaling == "ve" else alpha * out
        return x + s**2 * score_x


def wrap(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    prediction: str = "eps",
    scaling: str = "ve",
    time: str | Callable[[torch.Tensor], torch.Tensor] = "sigma",
    schedule: VPSchedule | None = None,
) -> Parameterized:
    """Turn ``net(x_in, t_in)`` trained to predict eps / x0 / v / score into ``D(x, sigma)``.

    Typical settings: a DDPM / guided-diffusion UNet is
    ``wrap(net, "eps", "vp", "ddpm", VPSchedule("linear"))``; a score-SDE VE model is
    ``wrap(net, "score", "ve", "sigma")``; a v-prediction model with continuous time is
    ``wrap(net, "v", "vp", "t", VPSchedule("cosine"))``. See :class:`Parameterized`.

    .. math::
        D(x, \\sigma) = \\begin{cases}
        F & \\text{x0} \\\\ x - \\sigma F & \\text{eps} \\\\
        \\alpha^2 x - \\alpha \\sigma F & \\text{v} \\\\ x + \\sigma^2 c F & \\text{score}
        \\end{cases}, \\qquad F = \\mathrm{net}(c\\,x,\\ t(\\sigma)),\\quad
        c = 1 \\ \\text{(VE) or } \\alpha = (1 + \\sigma^2)^{-1/2} \\ \\text{(VP)}.

    >>> D = wrap(lambda x, t: x, prediction="x0")   # the identity "denoiser"
    >>> D(torch.ones(1, 2), 3.0)
    tensor([[1., 1.]])
    """
    return Parameterized(net, prediction=prediction, scaling=scaling, time=time, schedule=schedule)
