r"""Measurement models as objects: the residual, the negative log-likelihood, its gradient through
any ``Physics`` and the variance where it depends on the point.

Every likelihood is (or is approximated by) a Gaussian in the measurement with a variance
:math:`v` that may depend on the measurement:

.. math::
    r = \frac{y - \mathcal A(x)}{\sqrt{v}}, \qquad
    -\log p(y \mid x) = \tfrac12 \|r\|^2 + \text{const}, \qquad
    \nabla_x\, \tfrac12 \|r\|^2 = -J_{\mathcal A}(x)^\top \frac{y - \mathcal A(x)}{v}

(one vector-Jacobian product through ``physics.A``).

================================  ================================================  ===================
likelihood                        variance :math:`v` per element                    from ``noise_model``
================================  ================================================  ===================
:class:`GaussianLikelihood`       :math:`\sigma^2` (a float, one per measurement,   deepinv ``GaussianNoise``
                                  or one per element)
:class:`PoissonLikelihood`        :math:`g \max(y, g)` (DPS eq. 16: Poisson          deepinv ``PoissonNoise``
                                  variance :math:`g\,\mathcal A x` taken at the
                                  counts, floored at one count)
:class:`PoissonGaussianLikelihood`  :math:`g \max(y, 0) + \sigma^2`                 deepinv ``PoissonGaussianNoise``
:class:`ComplexGaussianLikelihood`  :math:`\sigma^2 / 2` per real channel           invdiff ``ComplexGaussianNoise``
================================  ================================================  ===================

Complex data are stored as two real channels (real, imag), as in deepinv. The circular complex
Gaussian :math:`n \sim \mathcal{CN}(0, \sigma^2)` has :math:`\mathbb E|n|^2 = \sigma^2`, so each
real channel has variance :math:`\sigma^2/2` and :math:`-\log p = \|y - \mathcal A x\|^2/\sigma^2`
(the sum over both channels). A deepinv ``GaussianNoise(sigma)`` applied to (real, imag)
channels is instead :math:`\mathcal{CN}(0, 2\sigma^2)`; both conventions are the same Gaussian per
real channel, which is what the samplers see.

Samplers ask a likelihood what they need (:meth:`Likelihood.row_sigma` for the exact
linear-Gaussian algebra, :attr:`Likelihood.fixed_variance` for a constant curvature) and never
branch on its type or name.

>>> import deepinv as dinv
>>> lik = likelihood_from(dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(0.1)))
>>> y, z = torch.ones(2, 3), torch.zeros(2, 3)
>>> lik.bind(y, batch=2, n_samples=1).nll(y, z).round().tolist()   # ||y - z||^2 / (2 * 0.01)
[150.0, 150.0]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from invdiff.utils.checks import check_finite, check_positive

__all__ = [
    "Likelihood",
    "GaussianLikelihood",
    "PoissonLikelihood",
    "PoissonGaussianLikelihood",
    "ComplexGaussianLikelihood",
    "likelihood_from",
    "make_likelihood",
]


def _param_rows(value, y: Tensor, batch: int, n_samples: int, name: str) -> Tensor:
    """A noise parameter as a tensor on the working batch ``(n_samples * B, ...)`` of ``y``.

    A float or ``(B,)`` values (one per measurement) become ``(n, 1, ..., 1)``; a tensor of the
    measurement's shape ``y_shape`` or ``(B, *y_shape)`` (one per element) becomes ``(n, *y_shape)``.
    """
    v = torch.as_tensor(value, dtype=y.dtype, device=y.device)
    y_shape = tuple(y.shape[1:])
    if v.numel() == 1 or (v.ndim <= 1 and v.numel() == batch):
        v = v.flatten()
        v = v.expand(batch) if v.numel() == 1 else v
        check_positive(name, v)
        check_finite(name, v)
        return v.repeat(n_samples).reshape(-1, *([1] * len(y_shape)))
    if tuple(v.shape) == y_shape:
        v = v.expand(batch, *y_shape)
    if tuple(v.shape) != (batch, *y_shape):
        raise ValueError(
            f"{name}: expected a float, {batch} values (one per measurement), or one per element of shape "
            f"{y_shape} or {(batch, *y_shape)}; got shape {tuple(v.shape)}"
        )
    check_positive(name, v)
    check_finite(name, v)
    return v.repeat(n_samples, *([1] * len(y_shape)))


@dataclass(frozen=True)
class Likelihood:
    """Base class: a Gaussian (or Gaussian-approximated) measurement model ``y ~ N(A x, v)``.

    Subclasses define :meth:`variance` and :meth:`bind`. A likelihood made by the user holds
    its parameters as given; :meth:`bind` returns a copy whose parameters follow the working
    batch ``(n_samples * B, ...)`` of a sampler (done by :func:`invdiff.samplers.problem.make_problem`).
    """

    #: the variance does not depend on the point (so the NLL is quadratic for a linear operator)
    fixed_variance = True

    def bind(self, y: Tensor, batch: int, n_samples: int) -> "Likelihood":  # pragma: no cover - abstract
        raise NotImplementedError

    def variance(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        """:math:`\\mathrm{Var}\\,y` per element (broadcastable to ``y``)."""
        raise NotImplementedError

    def residual(self, y: Tensor, z: Tensor) -> Tensor:
        """The whitened residual :math:`(y - z) / \\sqrt{v}`, ``z = A(x)``."""
        return (y - z) / self.variance(y).sqrt()

    def norm_residual(self, y: Tensor, z: Tensor) -> Tensor:
        """The residual whose norm DPS's ``guidance="norm"`` differentiates (the paper's
        :math:`\\|y - \\mathcal A \\hat x_0\\|_\\Lambda`): :math:`y - z` in measurement units."""
        return y - z

    def nll(self, y: Tensor, z: Tensor) -> Tensor:
        """Negative log-likelihood up to a constant, per row: :math:`\\|r\\|^2 / 2`, shape ``(n,)``."""
        r = self.residual(y, z)
        return 0.5 * r.pow(2).flatten(1).sum(1)

    def grad(self, x: Tensor, y: Tensor, physics) -> tuple[Tensor, Tensor]:
        """``(grad, nll)``: :math:`\\nabla_x` of the NLL at ``x`` per row (one VJP through
        ``physics.A``) and its value, both detached."""
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            nll = self.nll(y, physics.A(x_in))
            (g,) = torch.autograd.grad(nll.sum(), x_in)
        return g, nll.detach()

    def mean_variance(self, y: Tensor) -> Tensor:
        """The variance averaged over each row's elements, ``(n,)``."""
        return self.variance(y).expand_as(y).flatten(1).mean(1)

    def mean_precision(self, y: Tensor) -> Tensor:
        """:math:`1/v` averaged over each row's elements, ``(n,)``."""
        return (1.0 / self.variance(y).expand_as(y)).flatten(1).mean(1)

    def row_sigma(self) -> Tensor | None:
        """The noise std as one value per row ``(n, 1, ..., 1)`` when the likelihood is Gaussian
        with a variance that is constant over each measurement, else ``None``."""
        return None


@dataclass(frozen=True)
class GaussianLikelihood(Likelihood):
    """:math:`y = \\mathcal A(x) + \\sigma n`, :math:`n \\sim \\mathcal N(0, I)`; ``sigma`` a float,
    ``(B,)`` (one per measurement) or one per element (``y_shape`` or ``(B, *y_shape)``).

    >>> lik = GaussianLikelihood(0.5).bind(torch.zeros(1, 2), batch=1, n_samples=1)
    >>> lik.nll(torch.ones(1, 2), torch.zeros(1, 2))       # 2 * 1 / (2 * 0.25)
    tensor([4.])
    """

    sigma: float | Tensor = 1.0

    def bind(self, y, batch, n_samples):
        return replace(self, sigma=_param_rows(self.sigma, y, batch, n_samples, "sigma_y"))

    def variance(self, y):
        return torch.as_tensor(self.sigma) ** 2

    def residual(self, y, z):
        return (y - z) / self.sigma

    def mean_variance(self, y):
        s = torch.as_tensor(self.sigma)
        return s.flatten() ** 2 if self._per_row(y) else super().mean_variance(y)

    def mean_precision(self, y):
        s = torch.as_tensor(self.sigma)
        return s.flatten() ** -2 if self._per_row(y) else super().mean_precision(y)

    def _per_row(self, y) -> bool:
        s = torch.as_tensor(self.sigma)
        return s.ndim == y.ndim and s[0].numel() == 1

    def row_sigma(self):
        s = torch.as_tensor(self.sigma)
        return s if s.ndim >= 1 and s[0].numel() == 1 else None


@dataclass(frozen=True)
class ComplexGaussianLikelihood(GaussianLikelihood):
    """Circular complex Gaussian noise :math:`\\mathcal{CN}(0, \\sigma^2)` on (real, imag) channels:
    ``sigma`` is the complex std (:math:`\\mathbb E|n|^2 = \\sigma^2`), each real channel has std
    :math:`\\sigma/\\sqrt2`, and :math:`-\\log p = \\|y - \\mathcal A x\\|^2 / \\sigma^2`.

    >>> lik = ComplexGaussianLikelihood(1.0).bind(torch.zeros(1, 2, 3), batch=1, n_samples=1)
    >>> lik.nll(torch.ones(1, 2, 3), torch.zeros(1, 2, 3)).round().tolist()    # |y|^2 / sigma^2 = 6
    [6.0]
    """

    def bind(self, y, batch, n_samples):
        per_channel = torch.as_tensor(self.sigma, dtype=y.dtype, device=y.device) / math.sqrt(2.0)
        return GaussianLikelihood(per_channel).bind(y, batch, n_samples)


@dataclass(frozen=True)
class PoissonLikelihood(Likelihood):
    """Photon counting :math:`y = g\\, \\mathrm{Poisson}(\\mathcal A(x) / g)` (mean :math:`\\mathcal A x`),
    approximated as in DPS (Chung et al. 2023, eq. 16) by a Gaussian with the Poisson variance
    taken at the measured counts, :math:`v = g \\max(y, g)` (floored at one count).

    :meth:`exact_nll` is the Poisson negative log-likelihood itself.

    >>> lik = PoissonLikelihood(1.0).bind(torch.zeros(1, 1), batch=1, n_samples=1)
    >>> lik.variance(torch.tensor([[4.0]]))
    tensor([[4.]])
    """

    gain: float | Tensor = 1.0
    fixed_variance = False  # the true variance g A x depends on the point

    def bind(self, y, batch, n_samples):
        return replace(self, gain=_param_rows(self.gain, y, batch, n_samples, "gain"))

    def variance(self, y):
        return self.gain * torch.maximum(y, torch.as_tensor(self.gain, dtype=y.dtype, device=y.device))

    def residual(self, y, z):
        return (y - z) / (self.gain * torch.maximum(y, self.gain)).sqrt()

    def norm_residual(self, y, z):
        """The paper's :math:`\\|y - \\mathcal A x\\|_\\Lambda` with :math:`\\Lambda = 1/(2y)` in counts."""
        return self.residual(y, z) * 0.5**0.5

    def exact_nll(self, y: Tensor, z: Tensor) -> Tensor:
        """:math:`\\sum_j \\lambda_j - k_j \\log \\lambda_j + \\log k_j!` with counts :math:`k = y/g` and
        rates :math:`\\lambda = z/g` (``z > 0``), per row."""
        k, lam = y / self.gain, z / self.gain
        return (lam - k * torch.log(lam) + torch.lgamma(k + 1)).flatten(1).sum(1)


@dataclass(frozen=True)
class PoissonGaussianLikelihood(Likelihood):
    """:math:`y = g\\,\\mathrm{Poisson}(\\mathcal A x / g) + \\sigma n`, approximated by a Gaussian of
    variance :math:`g \\max(y, 0) + \\sigma^2` (the Poisson part taken at the measurement)."""

    gain: float | Tensor = 1.0
    sigma: float | Tensor = 1.0
    fixed_variance = False

    def bind(self, y, batch, n_samples):
        return replace(self, gain=_param_rows(self.gain, y, batch, n_samples, "gain"),
                       sigma=_param_rows(self.sigma, y, batch, n_samples, "sigma_y"))

    def variance(self, y):
        return self.gain * y.clamp_min(0) + self.sigma**2


def likelihood_from(physics) -> Likelihood | None:
    """The likelihood of ``physics.noise_model`` by type (``None`` for no noise / ``ZeroNoise``).

    Raises ``ValueError`` for a noise model with no likelihood here, naming the accepted types.
    """
    from deepinv.physics import GaussianNoise, PoissonGaussianNoise, PoissonNoise, ZeroNoise

    nm = getattr(physics, "noise_model", None)
    if nm is None or isinstance(nm, ZeroNoise):
        return None
    try:
        from invdiff.operators.noise import ComplexGaussianNoise
    except ImportError:  # pragma: no cover - the operators are part of the distribution
        ComplexGaussianNoise = ()
    if ComplexGaussianNoise and isinstance(nm, ComplexGaussianNoise):
        return ComplexGaussianLikelihood(nm.sigma)
    if isinstance(nm, PoissonGaussianNoise):
        return PoissonGaussianLikelihood(nm.gain, nm.sigma)
    if isinstance(nm, PoissonNoise):
        return PoissonLikelihood(nm.gain)
    if isinstance(nm, GaussianNoise):
        return GaussianLikelihood(nm.sigma)
    raise ValueError(
        f"no likelihood for the noise model {type(nm).__name__}: expected deepinv GaussianNoise, PoissonNoise, "
        "PoissonGaussianNoise, ZeroNoise or invdiff ComplexGaussianNoise; pass likelihood= (an "
        "invdiff.samplers.likelihood object) or sigma_y= to sample()"
    )


def make_likelihood(physics, likelihood="auto", sigma_y=None) -> Likelihood:
    """The likelihood a sampler uses: an explicit :class:`Likelihood`; ``sigma_y`` (Gaussian);
    or, for ``"auto"``, the physics' noise model (:func:`likelihood_from`). The strings
    ``"gaussian"`` and ``"poisson"`` require the noise model to be of that family."""
    if isinstance(likelihood, Likelihood):
        if sigma_y is not None:
            raise ValueError("pass either likelihood= (an object) or sigma_y=, not both")
        return likelihood
    if likelihood not in ("auto", "gaussian", "poisson"):
        raise ValueError(f"likelihood: expected 'auto', 'gaussian', 'poisson' or a Likelihood object, got {likelihood!r}")
    if sigma_y is not None:
        if likelihood == "poisson":
            raise ValueError("likelihood='poisson' takes its gain from physics.noise_model; sigma_y= is Gaussian")
        return GaussianLikelihood(sigma_y)
    found = likelihood_from(physics)
    name = type(getattr(physics, "noise_model", None)).__name__
    if likelihood == "poisson" and not isinstance(found, PoissonLikelihood):
        raise ValueError(
            f"likelihood='poisson' needs physics.noise_model to be deepinv PoissonNoise (for its gain), got {name}"
        )
    if found is None or (likelihood == "gaussian" and found.row_sigma() is None and not isinstance(found, GaussianLikelihood)):
        got = "no noise model" if found is None else name
        raise ValueError(
            "sigma_y: the Gaussian likelihood needs the noise level; physics.noise_model is "
            f"{got}, not deepinv GaussianNoise, so pass sigma_y= explicitly"
        )
    return found
