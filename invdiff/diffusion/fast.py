r"""Optional speed-ups of the denoiser alone: ``torch.compile`` and bf16/fp16 autocast (both off by default).

Only the network call :math:`D_\theta(x, \sigma)` is wrapped. FFTs, operators, likelihood
gradients, log-weights and resampling stay outside, in the sampler's own precision: low
precision there loses the small differences that posterior sampling depends on (log-weights
of particles differ by a few units out of thousands; an FFT of a 256^2 image in bf16 has
~1e-2 relative error). The output is cast back to the input's dtype, so the sampler never
sees a bf16 tensor.

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> D = FastDenoiser(Gaussian(torch.zeros(2), 1.0), autocast=None)
>>> D(torch.ones(1, 2), 1.0)
tensor([[0.5000, 0.5000]])
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FastDenoiser", "AUTOCAST_DTYPES"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class FastDenoiser(nn.Module):
    """Wrap a prior ``D(x, sigma, **cond)``: optional ``torch.compile`` and autocast of the network.

    :param prior: the denoiser module (e.g. an :class:`~invdiff.diffusion.edm.EDMPrecond`).
    :param autocast: ``None`` (default, full precision), ``"bf16"`` or ``"fp16"``. fp16 is
        allowed on CUDA only (CPU kernels for it are slow or missing).
    :param compile: ``torch.compile`` the prior on the first call (default ``False``);
        ``compile_kwargs`` go to ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).

    Attributes of the wrapped prior (``card``, ``x_shape``, ``sigma_data``, ...) are visible
    through the wrapper, so it can replace the prior in any sampler.
    """

    def __init__(self, prior, autocast: str | None = None, compile: bool = False, compile_kwargs: dict | None = None):
        super().__init__()
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast: expected None, 'bf16' or 'fp16', got {autocast!r}")
        self.inner = prior
        self.autocast = autocast
        self.compile = bool(compile)
        self._compiled = None
        self._compile_kwargs = dict(compile_kwargs or {})

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def _net(self):
        if not self.compile:
            return self.inner
        if self._compiled is None:
            self._compiled = torch.compile(self.inner, **self._compile_kwargs)
        return self._compiled

    def forward(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        if self.autocast is None:
            return self._net()(x, sigma, **cond)
        if self.autocast == "fp16" and x.device.type != "cuda":
            raise ValueError("autocast='fp16' is for CUDA devices; use 'bf16' on the CPU")
        with torch.autocast(x.device.type, dtype=AUTOCAST_DTYPES[self.autocast]):
            out = self._net()(x, sigma, **cond)
        return out.to(x.dtype)
