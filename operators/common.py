r"""The common constructor arguments of every operator, checked and resolved in one place.

Every registered operator factory (``invdiff.operators.make(name, ...)``) and every operator
class accepts

- ``sigma``: standard deviation of additive Gaussian noise (a finite number or tensor >= 0),
  per real entry (deepinv's ``GaussianNoise``; for MRI's (real, imag) channels: per channel),
  or, for operators built with ``complex_noise=True`` (wireless channels), the standard
  deviation of circular complex noise :math:`\mathcal{CN}(0, \sigma^2)`;
- ``gain``: Poisson gain :math:`g` (photon counting, :math:`y = g\,\mathrm{Poisson}(Ax / g)`,
  finite > 0); with ``sigma`` too: Poisson-Gaussian noise;
- ``noise_model``: any deepinv ``NoiseModel``, used as given;
- ``generator``: the ``torch.Generator`` of the measurement noise (masks, kernels, matrices
  and sensor positions are fixed by each factory's ``seed``, not by it);
- ``device``: where the operator's buffers live (default CPU);
- ``dtype``: the floating dtype of the operator's buffers (default: as built, float32).

The one rule for conflicts (:func:`resolve_common`):

1. ``noise_model`` describes the whole noise, so ``noise_model`` together with ``sigma`` or
   ``gain`` is a ``ValueError`` naming both;
2. ``generator`` drives the noise that ``sigma``/``gain`` build; with a ``noise_model`` it is
   attached to (a copy of) the model when the model has no generator of its own, and a
   ``ValueError`` when the model already holds a different one;
3. a generator that drives noise must live on the operator's device type (deepinv draws the
   noise on the data's device), else ``ValueError``;
4. bad values are rejected before anything is built: ``sigma`` NaN, inf or < 0, ``gain`` NaN,
   inf or <= 0, a ``generator`` that is not a ``torch.Generator``, a ``dtype`` that is not a
   floating ``torch.dtype`` (``TypeError``), an unknown device (``ValueError``).

Operators also say whether they are linear: ``op.linear`` is ``True`` exactly for deepinv
``LinearPhysics`` (:func:`is_linear`), so the rule is the same as deepinv's class hierarchy.

>>> c = resolve_common(sigma=0.1, generator=torch.Generator().manual_seed(0))
>>> type(c.noise_model).__name__, c.device
('GaussianNoise', device(type='cpu'))
>>> resolve_common(sigma=0.1, noise_model=c.noise_model)
Traceback (most recent call last):
...
ValueError: give either noise_model or sigma, not both (noise_model describes the whole noise)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from deepinv.physics import LinearPhysics
from deepinv.physics.noise import NoiseModel, ZeroNoise

COMMON_ARGS = ("sigma", "gain", "noise_model", "generator", "device", "dtype")


@dataclass(frozen=True)
class Common:
    """The resolved common arguments: a noise model, a device and an optional dtype."""

    noise_model: NoiseModel
    generator: torch.Generator | None
    device: torch.device
    dtype: torch.dtype | None

    def finish(self, op):
        """Cast the real floating parameters and buffers of ``op`` to ``dtype`` and return it.

        Complex buffers are left alone (``Module.to(float64)`` would drop their imaginary
        part); operators pick their complex precision from the input's dtype. The device is
        set by the caller's construction."""
        if self.dtype is not None:
            dt = self.dtype
            op._apply(lambda t: t.to(dt) if t.is_floating_point() else t)
        return op


def _check_level(name: str, value, allow_zero: bool):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(f"{name}: expected a number or a tensor, got {type(value).__name__}")
    t = torch.as_tensor(value, dtype=torch.float64) if not isinstance(value, torch.Tensor) else value.detach()
    if t.is_complex() or not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name}: expected real values, got dtype {t.dtype}")
    t = t.to(torch.float64).cpu()
    rel = ">= 0" if allow_zero else "> 0"
    bad = ~torch.isfinite(t) | ((t < 0) if allow_zero else (t <= 0))
    if bool(bad.any()):
        shown = value if t.numel() == 1 else f"{int(bad.sum())} bad entries of {t.numel()}"
        raise ValueError(f"{name}: expected a finite value {rel}, got {shown}")
    return value


def check_dtype(dtype) -> torch.dtype | None:
    """``None`` or a floating ``torch.dtype`` (else ``TypeError``)."""
    if dtype is None:
        return None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype (torch.float32, torch.float64), got {dtype!r}")
    return dtype


def check_device(device) -> torch.device:
    """``torch.device(device)`` (default CPU), a ``ValueError`` for an unknown name."""
    if device is None:
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected a torch.device or a name such as 'cpu' or 'cuda:0', got {device!r} ({e})") from None


def _same_device(gen: torch.Generator, device: torch.device) -> bool:
    g = gen.device
    if g.type != device.type:
        return False
    return g.index is None or device.index is None or g.index == device.index


def resolve_common(
    sigma=None,
    gain=None,
    noise_model: NoiseModel | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype: torch.dtype | None = None,
    poisson: bool = True,
    complex_noise: bool = False,
) -> Common:
    r"""Check the common arguments and build the noise model (the module's rule for conflicts).

    .. math::
        y = z + \sigma\varepsilon, \qquad y = g\,\mathrm{Poisson}(z / g), \qquad
        y = g\,\mathrm{Poisson}(z / g) + \sigma\varepsilon \qquad (z = A x)

    :param poisson: ``False`` for operators whose measurements are not intensities (complex
        k-space): a ``gain`` is then a ``ValueError``.
    :param complex_noise: ``sigma`` is the standard deviation of circular complex noise
        :math:`\mathcal{CN}(0, \sigma^2)` on (real, imag) data (``ComplexGaussianNoise``: each real
        channel gets :math:`\sigma/\sqrt 2`) instead of deepinv's per-channel ``GaussianNoise``;
        implies ``poisson=False``.
    """
    from invdiff.operators.noise import make_noise

    _check_level("sigma", sigma, allow_zero=True)
    _check_level("gain", gain, allow_zero=False)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if noise_model is not None and not isinstance(noise_model, NoiseModel):
        raise TypeError(f"noise_model: expected a deepinv NoiseModel, got {type(noise_model).__name__}")
    dtype = check_dtype(dtype)
    dev = check_device(device)
    if noise_model is not None:
        given = [n for n, v in (("sigma", sigma), ("gain", gain)) if v is not None]
        if given:
            raise ValueError(f"give either noise_model or {'/'.join(given)}, not both (noise_model describes the whole noise)")
        own = getattr(noise_model, "rng", None)
        if generator is not None and not isinstance(noise_model, ZeroNoise):
            if own is None:
                noise_model = copy.deepcopy(noise_model)
                noise_model.rng = generator
                noise_model.register_buffer("initial_random_state", generator.get_state())
            elif own is not generator:
                raise ValueError("generator: noise_model already has its own generator (rng); give the generator to one of them")
    else:
        if gain is not None and not (poisson and not complex_noise):
            raise ValueError("gain: Poisson noise needs non-negative intensities; this operator's measurements are complex (use sigma)")
        if complex_noise and sigma is not None:
            from invdiff.operators.noise import ComplexGaussianNoise

            noise_model = ComplexGaussianNoise(float(sigma), rng=generator)
        else:
            noise_model = make_noise(sigma=sigma, gain=gain, generator=generator)
    uses_rng = getattr(noise_model, "rng", None)
    if uses_rng is not None and not _same_device(uses_rng, dev):
        raise ValueError(
            f"generator: on {uses_rng.device} but the operator is on {dev}; deepinv draws the noise on the "
            f"data's device, so create it there (torch.Generator(device={str(dev)!r}))"
        )
    return Common(noise_model=noise_model, generator=generator, device=dev, dtype=dtype)


def with_common(op, **common):
    """Give a built ``op`` (e.g. a PDE solver) the common arguments: its noise model, device and
    dtype, through :func:`resolve_common`; returns ``op``."""
    unknown = set(common) - set(COMMON_ARGS) - {"poisson"}
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}; expected some of {COMMON_ARGS}")
    c = resolve_common(**common)
    op.noise_model = c.noise_model
    op.to(device=c.device)
    return c.finish(op)


def pop_common(kwargs: dict) -> dict:
    """Remove and return the common arguments from ``kwargs`` (a factory's ``**kwargs``)."""
    return {k: kwargs.pop(k) for k in COMMON_ARGS if k in kwargs}


def is_linear(op) -> bool:
    """Whether ``op`` is linear in the sense of deepinv (an instance of ``LinearPhysics``)."""
    return isinstance(op, LinearPhysics)


class LinearFlag:
    """Mixin: ``op.linear``, ``True`` exactly for deepinv ``LinearPhysics`` (:func:`is_linear`)."""

    @property
    def linear(self) -> bool:
        """Whether the operator is linear (an instance of deepinv's ``LinearPhysics``)."""
        return is_linear(self)


def check_positive_finite(name: str, value, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` (a number or tensor) is finite and > 0 (``>= 0``)."""
    from invdiff.utils.checks import check_positive

    check_positive(name, value, allow_zero=allow_zero)
    if not bool(torch.isfinite(torch.as_tensor(value, dtype=torch.float64)).all()):
        raise ValueError(f"{name}: expected a finite value, got {value}")


def finite_number(name: str, value, low: float | None = None, low_inclusive: bool = False, integer: bool = False):
    """Raise unless ``value`` is a finite real (``integer``: an int) above ``low``; return it.

    >>> finite_number("views", 4, low=1, low_inclusive=True, integer=True)
    4
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    elif isinstance(value, np.generic) and not isinstance(value, (np.bool_, np.complexfloating)):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name}: expected {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite value, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name}: expected {'>=' if low_inclusive else '>'} {low}, got {value}")
    return value
