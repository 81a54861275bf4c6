"""Input validation with messages that say what was expected and what was got.

Shape and dtype checks are cheap and may run on every call; NaN/inf checks synchronise a GPU
and belong where data enters (samplers, readers, the CLI), not inside an operator's ``A``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``t.shape`` matches ``expected`` (``None`` matches any size).

    >>> check_shape("x", torch.zeros(2, 3), (None, 3))
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    shape = tuple(t.shape)
    ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {exp}, got {shape}")


def check_floating(name: str, t: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``t`` is a real floating-point tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor (float32/float64), got {t.dtype}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or inf (says how many)."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(f"{name}: expected finite values, got {int(bad.sum())} NaN/inf entries of {t.numel()}")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` (a number or tensor) is > 0 (or >= 0)."""
    v = torch.as_tensor(value)
    bad = (v < 0) if allow_zero else (v <= 0)
    if bool(bad.any()) or bool(torch.isnan(v).any()):
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected {rel}, got {value if v.numel() == 1 else v}")
