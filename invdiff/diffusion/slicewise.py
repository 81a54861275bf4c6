r"""A 2D prior applied to volumes slice by slice: the prior of DiffusionMBIR and DDS in 3D.

For a volume :math:`x` of shape ``(B, C, D, H, W)`` and a 2D denoiser :math:`D_{2D}`,

.. math::
    D(x, \sigma)_{[d]} = D_{2D}\big(x_{[d]}, \sigma\big), \qquad d = 1, \dots, N_{axis},

where :math:`x_{[d]}` is slice ``d`` along ``axis`` (2: axial, the default of DiffusionMBIR,
Chung et al. CVPR 2023). This is the denoiser of the product prior
:math:`p(x) = \prod_d p_{2D}(x_{[d]})`: it knows nothing of the neighbouring slices, which is
why DiffusionMBIR adds a TV term along ``z`` in the data-consistency step.

Slices go through the network as one batch of ``B * N_axis`` images, ``chunk`` at a time, so the
activation memory is bounded by ``chunk`` slices whatever the volume size; every slice of volume
``b`` gets that volume's noise level ``sigma[b]``.

>>> import torch
>>> D = SliceWisePrior(lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2), chunk=3)
>>> D(torch.ones(2, 1, 4, 5, 5), torch.tensor([0.0, 1.0]))[:, 0, 0, 0, 0]
tensor([1.0000, 0.5000])
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SliceWisePrior"]


class SliceWisePrior:
    """The 2D prior ``prior`` applied to every slice of a ``(B, C, D, H, W)`` volume (module docstring).

    :param prior: a 2D denoiser ``D(x, sigma)`` on ``(N, C, H, W)`` with ``sigma`` a ``(N,)`` tensor.
    :param axis: the slice axis (2, 3 or 4; negative values count from the end).
    :param chunk: slices per network call (bounds the memory; the result does not depend on it
        for a batch-independent network).
    :param depth: optional number of slices, to give the adapter an ``x_shape`` (checked by the
        samplers against the operator's signal shape).

    ``slice_evals`` counts the 2D network evaluations (images), ``sigma_data`` follows the 2D prior.
    """

    def __init__(self, prior, axis: int = 2, chunk: int = 64, depth: int | None = None) -> None:
        if not callable(prior):
            raise TypeError(f"prior: expected a 2D denoiser D(x, sigma), got {type(prior).__name__}")
        axis = axis + 5 if axis < 0 else axis
        if axis not in (2, 3, 4):
            raise ValueError(f"axis: expected 2, 3 or 4 (a spatial axis of (B, C, D, H, W)), got {axis}")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise ValueError(f"chunk: expected an int >= 1, got {chunk!r}")
        self.prior, self.axis, self.chunk = prior, axis, chunk
        self.slice_evals = 0
        if hasattr(prior, "sigma_data"):
            self.sigma_data = prior.sigma_data
        xs = getattr(prior, "x_shape", None)
        if depth is not None and xs is not None:
            C, h, w = xs
            spatial = [h, w]
            spatial.insert(axis - 2, int(depth))
            self.x_shape = (C, *spatial)

    def __call__(self, x: Tensor, sigma: float | Tensor, **cond) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 5:
            raise ValueError(f"x: expected a volume batch (B, C, D, H, W), got shape {tuple(getattr(x, 'shape', ()))}")
        B = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(1).expand(B)
        if sigma.shape != (B,):
            raise ValueError(f"sigma: expected a float or a ({B},) tensor, got shape {tuple(sigma.shape)}")
        n = x.shape[self.axis]
        slices = x.movedim(self.axis, 1)  # (B, n, C, h, w)
        shape = slices.shape
        flat = slices.reshape(B * n, *shape[2:])
        s = sigma.repeat_interleave(n)
        out = torch.empty_like(flat)
        for i in range(0, flat.shape[0], self.chunk):
            out[i : i + self.chunk] = self.prior(flat[i : i + self.chunk], s[i : i + self.chunk], **cond)
        self.slice_evals += flat.shape[0]
        return out.reshape(shape).movedim(1, self.axis)

    def __repr__(self) -> str:
        return f"SliceWisePrior({self.prior.__class__.__name__}, axis={self.axis}, chunk={self.chunk})"
