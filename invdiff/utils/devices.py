"""Device strings checked before any work: ``--device foo`` or ``cuda`` without a GPU fail with a message.

>>> check_device("cpu")
device(type='cpu')
"""
from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``torch.device(device)`` after checking it exists here; ``None`` passes through.

    Raises ``ValueError`` for an unknown device string, ``cuda`` without a usable GPU, a CUDA
    index past the number of GPUs, or ``mps`` where MPS is unavailable.
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {device!r} ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is available here (torch {torch.__version__}, "
                             f"built with CUDA {torch.version.cuda}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or mps, got {device!r}")
    return dev
