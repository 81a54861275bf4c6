"""Randomness that follows a ``torch.Generator`` (same seed, same result, on the same device).

A generator lives on a device; when it is given, noise is drawn on the generator's device
and moved to the target device, so a CPU generator also works for CUDA tensors.
"""
from __future__ import annotations

import torch


def randn(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Standard normal samples of ``shape`` on ``device`` / ``dtype``, drawn from ``generator``."""
    dtype = dtype or torch.get_default_dtype()
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``randn`` with the shape, device and dtype of ``x``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand(shape, generator: torch.Generator | None = None, device=None, dtype=None) -> torch.Tensor:
    """Uniform [0, 1) samples, drawn from ``generator`` (see ``randn``)."""
    dtype = dtype or torch.get_default_dtype()
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
