r"""Out-of-domain warning: is this measurement something the prior was trained for?

Two cheap statistics, each a z-score against in-domain examples, and a flag:

- **Denoiser residual** (:func:`denoiser_residual`): re-noise an image at a small level
  :math:`\sigma` and denoise; for images like the training data a good denoiser removes most of
  the noise, for others it removes less or changes the image:

  .. math:: \rho_\sigma(x) = \frac{\mathbb E_\varepsilon \|D(x + \sigma\varepsilon, \sigma) - x\|^2}{d\, \sigma^2} .

  Applied to the operator's baseline reconstruction (FBP, zero-filled: it follows the data,
  whereas a posterior sampler paints prior-like content over out-of-domain data) and compared
  with the same statistic on in-domain baseline reconstructions.
- **Measurement consistency** (:func:`measurement_consistency`): the whitened residual of a
  reconstruction, :math:`\chi^2/m = \|r\|^2 / m` with :math:`r = (y - \mathcal A \hat x)/\sqrt{v}`;
  about 1 when the reconstruction explains the data at the noise level. A sampler that forces an
  out-of-domain measurement onto the prior leaves a larger residual.

:class:`OODDetector` fits the mean and spread of both statistics on in-domain examples (e.g.
phantoms from the family's generator at a validation seed), then scores a new measurement:
``score = max(z_residual, z_consistency)``, ``flag = score > threshold`` (default 4).

>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> prior = Gaussian(torch.zeros(16), 1.0)           # D(x, s) = x / (1 + s^2)
>>> x = torch.zeros(1, 16)
>>> rho = float(denoiser_residual(prior, x, 0.5, n=64, generator=torch.Generator().manual_seed(0))[0])
>>> abs(rho - 0.64) < 0.15          # (0.4 sigma)^2 / sigma^2 = 0.64, 1024 chi^2 terms: sd 0.03
True
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invdiff.utils.random import randn

__all__ = ["denoiser_residual", "measurement_consistency", "OODDetector"]


def denoiser_residual(prior, x: Tensor, sigma: float = 0.1, n: int = 4,
                      generator: torch.Generator | None = None) -> Tensor:
    """:math:`\\rho_\\sigma(x)` per image ``(B,)``, averaged over ``n`` noise draws (``n`` batched calls)."""
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, got {sigma!r}")
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for _ in range(n):
            noisy = x + sigma * randn(x.shape, generator, x.device, x.dtype)
            s = torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)
            out += (prior(noisy, s) - x).double().pow(2).flatten(1).mean(1)
    return out / (n * sigma**2)


def measurement_consistency(y: Tensor, physics, x_hat: Tensor, likelihood=None) -> Tensor:
    """:math:`\\|r\\|^2 / m` per measurement ``(B,)`` with the likelihood of ``physics.noise_model``
    (or ``likelihood``, a :class:`~invdiff.samplers.likelihood.Likelihood`)."""
    from invdiff.samplers.likelihood import make_likelihood

    lik = make_likelihood(physics, likelihood if likelihood is not None else "auto").bind(y, y.shape[0], 1)
    with torch.no_grad():
        r = lik.residual(y, physics.A(x_hat))
    return r.double().pow(2).flatten(1).mean(1)


@dataclass
class OODDetector:
    """Out-of-domain score from in-domain reference statistics (module docstring).

    :param prior: the denoiser. :param sigma: re-noising level of the residual statistic.
    :param threshold: z-score above which the measurement is flagged.
    """

    prior: object
    sigma: float = 0.1
    threshold: float = 4.0
    n: int = 4
    ref: dict | None = None

    def statistics(self, y: Tensor, physics, x_hat: Tensor | None = None, generator=None) -> dict:
        """Raw statistics per measurement: ``residual`` (on the operator's baseline of ``y``) and,
        with a reconstruction ``x_hat``, ``consistency``."""
        with torch.no_grad():
            base = physics.baseline(y) if hasattr(physics, "baseline") else physics.A_dagger(y)
        out = {"residual": denoiser_residual(self.prior, base, self.sigma, self.n, generator)}
        if x_hat is not None:
            out["consistency"] = measurement_consistency(y, physics, x_hat)
        return out

    def fit(self, y: Tensor, physics, x_hat: Tensor | None = None, generator=None) -> "OODDetector":
        """Mean and std of the statistics on in-domain measurements ``y`` (and reconstructions)."""
        stats = self.statistics(y, physics, x_hat, generator)
        if y.shape[0] < 2:
            raise ValueError(f"y: expected at least 2 in-domain measurements to fit, got {y.shape[0]}")
        self.ref = {k: (float(v.mean()), float(v.std().clamp_min(1e-12))) for k, v in stats.items()}
        return self

    def score(self, y: Tensor, physics, x_hat: Tensor | None = None, generator=None) -> dict:
        """``{"score": (B,), "flag": (B,) bool, "z_<stat>": (B,)}``; needs :meth:`fit` first."""
        if self.ref is None:
            raise ValueError("OODDetector: call fit() on in-domain measurements first")
        stats = self.statistics(y, physics, x_hat, generator)
        out = {f"z_{k}": (v - self.ref[k][0]) / self.ref[k][1] for k, v in stats.items() if k in self.ref}
        score = torch.stack(list(out.values())).max(0).values
        return {**out, "score": score, "flag": score > self.threshold, **{k: v for k, v in stats.items()}}
