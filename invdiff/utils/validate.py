r"""Checks against silent wrong results: measurement shape, prior/operator shape, divergence, data range.

Each check is cheap and runs where data enter (``make_problem``, the CLI) or once per sampler
step (:func:`check_divergence`, a reduction over the iterate):

- :func:`check_measurement`: ``y`` must have the exact shape :math:`A` gives a signal of the
  operator's shape, ``(B, *A(0).shape[1:])``; a broadcastable ``y`` (e.g. ``(1, 1, 1, 1)``) is
  refused instead of producing a meaningless posterior.
- :func:`check_prior_operator`: the prior's signal shape (``prior.x_shape``, or derived from its
  training card: channels, image size, vector length) must equal the operator's.
- :func:`check_divergence`: a sampler's iterate must stay finite and within ``scale_bound``,
  and the data residual :math:`\|y - A\hat x_0\|` within ``residual_bound``; the error names
  the step, so divergence is caught before values turn NaN.
- :func:`check_range`: a warning when the data fall far outside the range of the prior's
  training data (e.g. an image in 0..255 given to a prior trained on [0, 1]).

>>> import torch, deepinv as dinv
>>> physics = dinv.physics.Denoising()
>>> check_measurement(torch.zeros(2, 1, 4, 4), physics, (1, 4, 4))
(1, 4, 4)
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from invdiff.utils.checks import check_finite, check_floating

__all__ = ["check_measurement", "check_prior_operator", "prior_x_shape", "check_divergence", "divergence_bound", "DivergenceError",
           "check_range", "data_range", "OutOfRangeWarning", "KNOWN_RANGES"]

# Range of the training data of each data generator (per value, all channels).
KNOWN_RANGES = {"ct-phantom": (0.0, 1.0), "mri-phantom": (-1.0, 1.0)}


class DivergenceError(FloatingPointError):
    """A sampler's iterate or residual left its bounds (raised by :func:`check_divergence`)."""


class OutOfRangeWarning(UserWarning):
    """Data outside the range of the prior's training data."""


def check_measurement(y: torch.Tensor, physics, x_shape: Sequence[int] | None = None,
                      strict_probe: bool = False) -> tuple[int, ...] | None:
    """Raise ``ValueError`` unless ``y`` is a batch of measurements of the shape ``physics.A`` gives.

    The expected shape is ``physics.y_shape`` when the operator has one, else the shape of
    ``physics.A`` applied to one zero signal of shape ``x_shape`` (default ``physics.x_shape``).
    Returns the per-measurement shape ``y.shape[1:]``, or ``None`` when the probe cannot run
    (an operator with per-measurement parameters that needs the full batch) and
    ``strict_probe`` is False.
    """
    check_floating("y", y)
    if y.ndim < 2 or y.shape[0] < 1:
        raise ValueError(f"y: expected a batch of shape (B, *y_shape) with B >= 1, got shape {tuple(y.shape)}")
    check_finite("y", y)
    expected = getattr(physics, "y_shape", None)
    if expected is None:
        x_shape = x_shape if x_shape is not None else getattr(physics, "x_shape", None)
        if x_shape is None:
            raise ValueError(f"cannot tell the measurement shape of {type(physics).__name__}: pass x_shape")
        try:
            with torch.no_grad():
                expected = physics.A(torch.zeros(1, *x_shape, dtype=y.dtype, device=y.device)).shape[1:]
        except (RuntimeError, ValueError) as exc:
            if strict_probe:
                raise ValueError(f"cannot apply {type(physics).__name__} to a signal of shape {tuple(x_shape)} ({exc})") from None
            return None
    expected = tuple(int(s) for s in expected)
    if tuple(y.shape[1:]) != expected:
        raise ValueError(f"y: expected a measurement of shape (B, {', '.join(map(str, expected))}) for "
                         f"{type(physics).__name__}, got {tuple(y.shape)}")
    return expected


def prior_x_shape(prior) -> tuple[int, ...] | None:
    """The signal shape a prior models: ``prior.x_shape``, or from its card (None if unknown)."""
    shape = getattr(prior, "x_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    card = getattr(prior, "card", None) or {}
    net = dict(card.get("network", {}))
    params = dict(card.get("data", {}).get("params", {}))
    name = net.get("name")
    if name == "mlp" and "dim" in net:
        return (int(net["dim"]),)
    if name == "unet" and "in_channels" in net and "size" in params:
        return (int(net["in_channels"]), int(params["size"]), int(params["size"]))
    if name == "unet1d" and "in_channels" in net and "size" in params:
        return (int(net["in_channels"]), int(params["size"]))
    return None


def check_prior_operator(prior, x_shape: Sequence[int], prior_name: str = "prior", operator_name: str = "operator") -> None:
    """Raise ``ValueError`` unless the prior models signals of the operator's shape ``x_shape``.

    Uses :func:`prior_x_shape`; where the card does not tell the whole shape, the channel count
    (``in_channels``) is compared and the prior is probed once on a zero signal of ``x_shape``.
    """
    x_shape = tuple(int(s) for s in x_shape)
    shape = prior_x_shape(prior)
    if shape is not None:
        if shape != x_shape:
            what = f" ({shape[0]} vs {x_shape[0]} channels)" if len(shape) > 1 and len(x_shape) > 1 and shape[0] != x_shape[0] else ""
            raise ValueError(f"{prior_name} models signals of shape {shape}, {operator_name} has signals of shape {x_shape}{what}")
        return
    net = (getattr(prior, "card", None) or {}).get("network", {})
    if "in_channels" in net and int(net["in_channels"]) != x_shape[0]:
        raise ValueError(f"{prior_name} has {net['in_channels']} channels, {operator_name} expects x_shape {x_shape}")
    try:
        p = next(iter(prior.parameters()), None) if hasattr(prior, "parameters") else None
        z = torch.zeros(1, *x_shape, device=p.device if p is not None else None, dtype=p.dtype if p is not None else None)
        with torch.no_grad():
            out = prior(z, 1.0)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{prior_name} cannot denoise signals of shape {x_shape} of {operator_name} "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if tuple(out.shape[1:]) != x_shape:
        raise ValueError(f"{prior_name} maps signals of shape {x_shape} to shape {tuple(out.shape[1:])}")


def check_divergence(x: torch.Tensor, residual: torch.Tensor | float | None, step: int, scale_bound: float,
                     residual_bound: float | None = None, name: str = "sampler") -> None:
    r"""Raise :class:`DivergenceError` naming ``step`` if the iterate diverges.

    Diverged means: ``x`` holds NaN/inf, :math:`\max|x| >` ``scale_bound``, or the data
    residual (a norm, per sample or scalar) is non-finite or above ``residual_bound``.
    Typical bounds: ``scale_bound = 10 * (hi - lo) + max(|lo|, |hi|)`` from the prior's data
    range (:func:`data_range`) plus the largest noise level, ``residual_bound = 100 * ||y||``.
    One reduction: call it every step, or every few steps on a GPU.

    >>> check_divergence(torch.ones(3), torch.tensor(0.5), step=4, scale_bound=10.0)
    """
    top = float(x.detach().abs().amax()) if x.numel() else 0.0
    if not math.isfinite(top):
        raise DivergenceError(f"{name}: diverged at step {step}: the iterate holds NaN/inf")
    if top > scale_bound:
        raise DivergenceError(f"{name}: diverged at step {step}: max |x| = {top:.3g} exceeds {scale_bound:.3g} "
                              "(step size / guidance too large?)")
    if residual is not None:
        r = float(torch.as_tensor(residual).detach().abs().max())
        if not math.isfinite(r):
            raise DivergenceError(f"{name}: diverged at step {step}: the data residual is {r}")
        if residual_bound is not None and r > residual_bound:
            raise DivergenceError(f"{name}: diverged at step {step}: data residual {r:.3g} exceeds {residual_bound:.3g}")


def divergence_bound(prior_or_card, sigma: float = 0.0, factor: float = 10.0) -> float:
    r"""A bound on :math:`\max|x|` for :func:`check_divergence` at noise level ``sigma``:
    :math:`\max(|lo|, |hi|) + \mathrm{factor}\,((hi - lo) + \sigma)` with the prior's data
    range (``[-1, 1]`` when unknown). A noisy iterate :math:`x_0 + \sigma\epsilon` exceeds it
    with probability below :math:`10^{-20}` per entry (a 10-sigma event)."""
    lo, hi = data_range(prior_or_card) or (-1.0, 1.0)
    return max(abs(lo), abs(hi)) + factor * ((hi - lo) + float(sigma))


def data_range(prior_or_card) -> tuple[float, float] | None:
    """The (lo, hi) range of a prior's training data: ``card["data_range"]`` or :data:`KNOWN_RANGES`."""
    card = prior_or_card if isinstance(prior_or_card, dict) else (getattr(prior_or_card, "card", None) or {})
    if "data_range" in card:
        lo, hi = card["data_range"]
        return float(lo), float(hi)
    gen = card.get("data", {}).get("generator")
    return KNOWN_RANGES.get(gen)


def check_range(x: torch.Tensor, prior_or_card, name: str = "x", tolerance: float = 0.5) -> bool:
    """Warn (:class:`OutOfRangeWarning`) if ``x`` leaves the prior's data range widened by
    ``tolerance * (hi - lo)`` on each side; returns True when in range (or the range is unknown)."""
    rng = data_range(prior_or_card)
    if rng is None or x.numel() == 0:
        return True
    lo, hi = rng
    margin = tolerance * (hi - lo)
    xmin, xmax = float(x.detach().amin()), float(x.detach().amax())
    if xmin < lo - margin or xmax > hi + margin:
        warnings.warn(f"{name} spans [{xmin:.3g}, {xmax:.3g}], far outside the prior's data range [{lo:g}, {hi:g}] "
                      "(unnormalised data, e.g. 0..255?); results will be poor", OutOfRangeWarning, stacklevel=2)
        return False
    return True
