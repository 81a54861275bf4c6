r"""Hallucination maps from the trajectory of :math:`\hat x_0` (no extra network call).

Seed: Aithal et al. 2024, "Understanding Hallucinations in Diffusion Models through Mode
Interpolation": hallucinated content shows as high variance of the predicted :math:`\hat x_0`
over the last part of the reverse trajectory, when the sampler hesitates between modes. Here

.. math::
    V(p) = \frac{1}{|S|} \sum_{i \in S} \big(\hat x_0^{(i)}(p) - \bar x_0(p)\big)^2,
    \qquad S = \text{the last } \lceil f\, T \rceil \text{ steps},

accumulated online (Welford) from the :math:`\hat x_0` the sampler computes anyway, and a pixel is
flagged when :math:`\sqrt{V(p)}` exceeds a threshold (:func:`flag_map`). :func:`components`
groups flags or errors into connected structures, :func:`score_structures` counts how many
hallucinated structures (error components absent from the truth) a flag map catches and how
many true structures it flags.

Samplers on the shared loop (DPS, DDS, ...) record it with :func:`attach_x0_variance`, which
wraps the instance's data-consistency hook (``correct``, called with every :math:`\hat x_0`);
DAPS and ``smc-adaptive`` return ``trace["x0_var"]`` themselves.

>>> import torch
>>> rec = X0Variance(n_steps=4, fraction=0.5)
>>> for i, v in enumerate([0.0, 5.0, 1.0, 3.0]):
...     rec.update(i, torch.tensor([v]))
>>> rec.variance()                                  # variance of the last two values (1, 3)
tensor([1.])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["X0Variance", "attach_x0_variance", "flag_map", "components", "score_structures"]


class X0Variance:
    """Online per-pixel variance of :math:`\\hat x_0` over the last ``fraction`` of ``n_steps`` steps."""

    def __init__(self, n_steps: int, fraction: float = 0.25) -> None:
        if not (0 < fraction <= 1):
            raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
        self.start = n_steps - max(1, math.ceil(fraction * n_steps))
        self.k, self.mean, self.m2 = 0, None, None

    def update(self, i: int, x0_hat: Tensor) -> None:
        if i < self.start:
            return
        x0_hat = x0_hat.detach()
        self.k += 1
        if self.mean is None:
            self.mean, self.m2 = x0_hat.clone(), torch.zeros_like(x0_hat)
            return
        delta = x0_hat - self.mean
        self.mean = self.mean + delta / self.k
        self.m2 = self.m2 + delta * (x0_hat - self.mean)

    def variance(self) -> Tensor | None:
        return None if self.m2 is None else self.m2 / self.k


def attach_x0_variance(sampler, fraction: float = 0.25):
    """Set the fraction of the last steps over which a :class:`~invdiff.samplers.loop.DiffusionLoop`
    sampler records ``trace["x0_var"]`` (``(n_samples, B, *x_shape)``; every loop sampler records
    it, by default over the last quarter). Returns the sampler."""
    if not (0 < fraction <= 1):
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    sampler.x0_var_fraction = float(fraction)
    return sampler


def flag_map(x0_var: Tensor, threshold: float) -> Tensor:
    """Boolean flags :math:`\\sqrt{V} > \\text{threshold}` (same shape as ``x0_var``)."""
    return x0_var.clamp_min(0).sqrt() > threshold


def components(mask: Tensor, min_size: int = 3) -> list[Tensor]:
    """Connected components (8-connectivity) of a 2-D boolean mask with at least ``min_size`` pixels,
    each as a boolean mask."""
    from scipy import ndimage

    lab, n = ndimage.label(mask.cpu().numpy(), structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    lab = torch.from_numpy(lab)
    out = [lab == j for j in range(1, n + 1)]
    return [c for c in out if int(c.sum()) >= min_size]


def score_structures(recon: Tensor, truth: Tensor, flags: Tensor, true_mask: Tensor | None = None,
                     err_threshold: float = 0.1, min_size: int = 3) -> dict:
    """Count hallucinated structures caught by ``flags`` (2-D images).

    A *hallucinated structure* is a connected component of ``|recon - truth| > err_threshold``
    (at least ``min_size`` pixels); it is *caught* if a flag touches it. ``true_mask`` marks real
    structures of interest (e.g. an inserted rare feature); a true structure is *flagged* if a flag
    touches it. Also the pixel-level flag rates inside and outside the error mask.
    """
    err = (recon - truth).abs() > err_threshold
    hall = components(err, min_size)
    flags = flags.bool().cpu()
    caught = sum(bool((c & flags).any()) for c in hall)
    row = {"hallucinated": len(hall), "caught": caught, "flagged_px": int(flags.sum()),
           "flag_rate_on_errors": float(flags[err.cpu()].double().mean()) if bool(err.any()) else float("nan"),
           "flag_rate_elsewhere": float(flags[~err.cpu()].double().mean()) if bool((~err).any()) else float("nan")}
    if true_mask is not None:
        true = components(true_mask.bool().cpu(), 1)
        row["true_structures"] = len(true)
        row["true_flagged"] = sum(bool((c & flags).any()) for c in true)
    return row
