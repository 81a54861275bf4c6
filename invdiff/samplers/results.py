"""The result of every posterior sampler: :class:`PosteriorSamples`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["PosteriorSamples"]


# --------------------------------------------------------------------------------------------
@dataclass
class PosteriorSamples:
    """Samples of a posterior sampler, with optional importance log-weights.

    ``samples`` has shape ``(n_samples, B, *x_shape)``; ``log_weights`` is ``(n_samples, B)``
    (unnormalised, log space) for weighted samplers, ``None`` for equally weighted ones.
    ``nfe`` counts denoiser evaluations per sample; ``trace`` holds per-step diagnostics
    (e.g. ``"ess"``, ``"residual_norm"``, ``"trajectory"`` of shape ``(n_rec, n_samples, B,
    *x_shape)`` with ``"trajectory_steps"``).

    The weighted moments are

    .. math::
        \\bar w_k = \\frac{e^{\\ell_k}}{\\sum_j e^{\\ell_j}}, \\quad
        \\hat\\mu = \\sum_k \\bar w_k x_k, \\quad
        \\hat\\sigma^2 = \\sum_k \\bar w_k (x_k - \\hat\\mu)^2 .

    >>> out = PosteriorSamples(torch.tensor([[[0.0]], [[2.0]]]), None, nfe=0)
    >>> out.mean(), out.std()
    (tensor([[1.]]), tensor([[1.]]))
    """

    samples: Tensor
    log_weights: Tensor | None = None
    nfe: int = 0
    trace: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.samples, Tensor) or self.samples.ndim < 2:
            raise ValueError(
                "samples: expected a tensor of shape (n_samples, B, *x_shape), got "
                f"{getattr(self.samples, 'shape', type(self.samples).__name__)}"
            )
        if self.log_weights is not None and tuple(self.log_weights.shape) != tuple(self.samples.shape[:2]):
            raise ValueError(
                f"log_weights: expected shape {tuple(self.samples.shape[:2])} (n_samples, B), "
                f"got {tuple(self.log_weights.shape)}"
            )

    @property
    def n_samples(self) -> int:
        return self.samples.shape[0]

    def weights(self) -> Tensor:
        """Normalised weights ``(n_samples, B)`` (uniform when ``log_weights`` is None)."""
        n, b = self.samples.shape[:2]
        if self.log_weights is None:
            return torch.full((n, b), 1.0 / n, dtype=self.samples.dtype, device=self.samples.device)
        return torch.softmax(self.log_weights.to(self.samples.dtype), dim=0)

    def ess(self) -> Tensor:
        """Effective sample size ``1 / sum_k w_k^2`` of the final weights per measurement, ``(B,)``.

        After a final resampling this is ``n_samples`` even if the ensemble collapsed on the
        way: :meth:`min_ess` reports the lowest ESS over the run.
        """
        return 1.0 / (self.weights() ** 2).sum(0)

    def min_ess(self) -> Tensor:
        """The lowest ESS over the run per measurement ``(B,)`` (from ``trace["ess"]``, recorded
        before each resampling by weighted samplers), else the final :meth:`ess`."""
        per_step = self.trace.get("ess")
        if isinstance(per_step, Tensor) and per_step.ndim == 2:
            return torch.minimum(per_step.min(0).values.to(self.samples.dtype), self.ess().cpu())
        return self.ess()

    def _w(self) -> Tensor:
        return self.weights().reshape(*self.samples.shape[:2], *([1] * (self.samples.ndim - 2)))

    def mean(self) -> Tensor:
        """Weighted posterior mean, shape ``(B, *x_shape)``."""
        return (self._w() * self.samples).sum(0)

    def std(self) -> Tensor:
        """Weighted posterior standard deviation per coordinate, shape ``(B, *x_shape)``.

        The plug-in (biased) estimator; with equal weights it equals ``samples.std(0,
        unbiased=False)``.
        """
        m = self.mean()
        var = (self._w() * (self.samples - m) ** 2).sum(0)
        return var.clamp_min(0).sqrt()
