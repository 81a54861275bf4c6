r"""Masking schedules of absorbing-state (masked) diffusion.

A token is unmasked at time :math:`t \in [0, 1]` with probability :math:`\alpha_t` (decreasing,
:math:`\alpha_0 = 1`, :math:`\alpha_1 = 0`), masked otherwise (Sahoo et al. 2024, MDLM; Shi et
al. 2024, MD4):

.. math::
    q(z_t \mid x) = \mathrm{Cat}\big(\alpha_t\, x + (1 - \alpha_t)\, m\big).

The MDLM loss weights the masked cross-entropy by :math:`w(t) = -\alpha'_t / (1 - \alpha_t)`.

===========  ================================  ============================
schedule     :math:`\alpha_t`                   :math:`w(t)`
===========  ================================  ============================
log-linear   :math:`1 - t`                      :math:`1/t`
cosine       :math:`\cos(\pi t / 2)`            :math:`\frac{\pi}{2}\frac{\sin(\pi t/2)}{1 - \cos(\pi t/2)}`
===========  ================================  ============================

("log-linear" is MDLM's name: the total noise :math:`-\log \alpha_t = -\log(1 - t)` is
log-linear in :math:`1 - t`.)

>>> s = make_schedule("loglinear")
>>> float(s.alpha(torch.tensor(0.25)))
0.75
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MaskingSchedule", "LogLinear", "Cosine", "make_schedule"]


class MaskingSchedule:
    """Base class: :meth:`alpha` (unmasked probability), :meth:`dalpha` (its derivative),
    :meth:`weight` (the MDLM weight) and :meth:`grid` (the reverse-time grid)."""

    name = "base"

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def weight(self, t: Tensor) -> Tensor:
        r""":math:`w(t) = -\alpha'_t / (1 - \alpha_t)`."""
        return -self.dalpha(t) / (1 - self.alpha(t))

    def grid(self, steps: int, dtype=torch.float64) -> Tensor:
        """Reverse-time grid ``1 = t_0 > t_1 > ... > t_steps = 0`` (uniform in t)."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)

    def unmasked_counts(self, length: int, steps: int) -> list[int]:
        """How many of ``length`` tokens are unmasked after each of ``steps`` reverse steps
        (:math:`\\lceil L\\,\\alpha_{t_{i+1}} \\rceil`, non-decreasing, ending at ``length``); used by
        the samplers that unmask a fixed number of tokens per step."""
        a = self.alpha(self.grid(steps)[1:])
        counts = torch.ceil(length * a - 1e-9).long().clamp(0, length).tolist()
        counts[-1] = length
        out, prev = [], 0
        for c in counts:
            prev = max(prev, int(c))
            out.append(prev)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LogLinear(MaskingSchedule):
    r""":math:`\alpha_t = 1 - t` (MDLM's log-linear schedule)."""

    name = "loglinear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def dalpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


class Cosine(MaskingSchedule):
    r""":math:`\alpha_t = \cos(\pi t / 2)` (MD4's cosine schedule)."""

    name = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


_SCHEDULES = {"loglinear": LogLinear, "cosine": Cosine}


def make_schedule(name: str | MaskingSchedule) -> MaskingSchedule:
    """The schedule called ``name`` (``"loglinear"`` or ``"cosine"``), or ``name`` itself."""
    if isinstance(name, MaskingSchedule):
        return name
    if name not in _SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(_SCHEDULES)} or a MaskingSchedule, got {name!r}")
    return _SCHEDULES[name]()
