r"""The measurement set-up shared by every sampler: :class:`Problem` and :func:`make_problem`.

A sampler draws ``n_samples`` posterior samples per measurement in one batch: the measurement
batch ``(B, ...)`` is repeated ``n_samples`` times along the batch axis (sample-major, so that
row ``k * B + b`` is sample ``k`` of measurement ``b``) and every step costs one batched
denoiser call. The measurement model is a :class:`~invdiff.samplers.likelihood.Likelihood`
bound to that working batch, so samplers never look at noise-model names:

.. math:: r = \frac{y - \mathcal A(x)}{\sqrt{\mathrm{Var}\, y}}, \qquad
    -\log p(y \mid x) = \tfrac12 \|r\|^2 + \text{const}.

Conditions of a conditional prior ``D(x, sigma, **cond)`` travel with the problem: tensors
with a leading axis of size ``B`` are repeated to the working batch like ``y``; anything else
is passed as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from invdiff.samplers.likelihood import Likelihood, make_likelihood
from invdiff.utils.checks import check_finite, check_floating
from invdiff.utils.validate import check_measurement, prior_x_shape

__all__ = ["Problem", "make_problem"]


@dataclass
class Problem:
    """A measurement batch set up for sampling ``n_samples`` posterior draws in one batch.

    ``y`` is the measurement repeated to ``(n_samples * B, *y_shape)`` (sample-major);
    ``likelihood`` is bound to those rows; ``cond`` holds the prior's conditions on the rows.
    """

    y: Tensor
    physics: object
    x_shape: tuple[int, ...]
    batch: int
    n_samples: int
    likelihood: Likelihood
    cond: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Rows of the working batch: ``n_samples * B``."""
        return self.n_samples * self.batch

    @property
    def dtype(self) -> torch.dtype:
        return self.y.dtype

    @property
    def device(self) -> torch.device:
        return self.y.device

    @property
    def sigma_y(self) -> Tensor | None:
        """The Gaussian noise std per row ``(n, 1, ..., 1)`` (``None`` if the likelihood has none)."""
        return self.likelihood.row_sigma()

    def fold(self, x: Tensor) -> Tensor:
        """``(n_samples * B, ...) -> (n_samples, B, ...)``."""
        return x.reshape(self.n_samples, self.batch, *x.shape[1:])

    def unfold(self, x: Tensor) -> Tensor:
        """``(n_samples, B, ...) -> (n_samples * B, ...)``."""
        return x.reshape(self.n, *x.shape[2:])

    def zeros(self) -> Tensor:
        """A zero signal batch ``(n_samples * B, *x_shape)`` with y's dtype and device."""
        return torch.zeros(self.n, *self.x_shape, dtype=self.dtype, device=self.device)

    def whitened_residual(self, x: Tensor) -> Tensor:
        """:math:`r = (y - \\mathcal{A}(x)) / \\sqrt{\\mathrm{Var}\\,y}`, differentiable in ``x``."""
        return self.likelihood.residual(self.y, self.physics.A(x))

    def nll(self, x: Tensor) -> Tensor:
        """Negative log-likelihood up to a constant, per row: :math:`\\|r\\|^2 / 2`, shape ``(n,)``."""
        return self.likelihood.nll(self.y, self.physics.A(x))

    def nll_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(grad, nll)`` of the negative log-likelihood at ``x`` (one vector-Jacobian product)."""
        return self.likelihood.grad(x, self.y, self.physics)

    def baseline(self) -> Tensor:
        """A baseline inverse of ``y``: the operator's classical reconstruction
        (``physics.baseline``, e.g. FBP for invdiff's CT), else ``A_dagger`` if linear, else zeros."""
        try:
            return self.physics.baseline(self.y).reshape(self.n, *self.x_shape)
        except (AttributeError, NotImplementedError):
            pass
        if hasattr(self.physics, "A_dagger") and hasattr(self.physics, "A_adjoint"):
            return self.physics.A_dagger(self.y).reshape(self.n, *self.x_shape)
        return self.zeros()


def _signal_shape(y: Tensor, physics, x_shape) -> tuple[int, ...]:
    if x_shape is not None:
        return tuple(int(s) for s in x_shape)
    xs = getattr(physics, "x_shape", None)
    if xs is not None:
        return tuple(int(s) for s in xs)
    if hasattr(physics, "A_adjoint"):
        with torch.no_grad():
            return tuple(physics.A_adjoint(y).shape[1:])
    raise ValueError(
        "cannot tell the signal shape: the physics has no x_shape attribute and no A_adjoint "
        f"({type(physics).__name__}); pass x_shape=(C, H, W) to sample()"
    )


def _repeat_cond(cond: dict | None, batch: int, n_samples: int) -> dict:
    if cond is None:
        return {}
    if not isinstance(cond, dict):
        raise TypeError(f"cond: expected a dict of keyword arguments of the prior, got {type(cond).__name__}")
    out = {}
    for k, v in cond.items():
        if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == batch:
            v = v.repeat(n_samples, *([1] * (v.ndim - 1)))
        out[k] = v
    return out


def make_problem(
    y: Tensor,
    physics,
    n_samples: int = 1,
    *,
    sigma_y: float | Tensor | None = None,
    likelihood: str | Likelihood = "auto",
    x_shape=None,
    prior=None,
    cond: dict | None = None,
) -> Problem:
    """Validate ``y`` and ``physics`` and set up the batch of ``n_samples`` copies.

    The likelihood is ``likelihood`` (a :class:`~invdiff.samplers.likelihood.Likelihood`), a
    Gaussian of std ``sigma_y``, or (``"auto"``) the one of ``physics.noise_model``
    (:func:`~invdiff.samplers.likelihood.likelihood_from`). Raises ``ValueError`` for
    non-finite ``y``, a ``y`` whose shape is not the operator's measurement shape, an unknown
    noise level, or a prior whose ``x_shape`` differs from the operator's signal shape.

    >>> import deepinv as dinv
    >>> physics = dinv.physics.Denoising(noise_model=dinv.physics.GaussianNoise(0.1))
    >>> p = make_problem(torch.zeros(2, 1, 4, 4), physics, n_samples=3)
    >>> p.y.shape, p.x_shape, float(p.sigma_y.flatten()[0])
    (torch.Size([6, 1, 4, 4]), (1, 4, 4), 0.10000000149011612)
    """
    check_floating("y", y)
    if y.ndim < 2:
        raise ValueError(f"y: expected a batch of shape (B, *y_shape), got shape {tuple(y.shape)}")
    check_finite("y", y)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    if not hasattr(physics, "A"):
        raise TypeError(f"physics: expected a deepinv Physics with an A method, got {type(physics).__name__}")

    batch = y.shape[0]
    lik = make_likelihood(physics, likelihood, sigma_y)
    shape = _signal_shape(y, physics, x_shape)
    prior_shape = prior_x_shape(prior)
    if prior_shape is not None and tuple(prior_shape) != shape:
        raise ValueError(
            f"prior/operator shape mismatch: the prior models signals of shape {tuple(prior_shape)}, "
            f"the operator's signals have shape {shape}"
        )
    check_measurement(y, physics, shape)
    y_rep = y.repeat(n_samples, *([1] * (y.ndim - 1)))
    lik = lik.bind(y, batch, n_samples)
    if n_samples > 1 and batch > 1:  # per-measurement operator parameters cannot follow the repeat
        try:
            with torch.no_grad():
                probe = physics.A(torch.zeros(y_rep.shape[0], *shape, dtype=y.dtype, device=y.device))
            ok = tuple(probe.shape) == tuple(y_rep.shape)
        except (RuntimeError, ValueError) as err:
            ok, probe = False, err
        if not ok:
            raise ValueError(
                f"the operator does not broadcast over the {n_samples} x {batch} batch of samples "
                f"(got {getattr(probe, 'shape', probe)}); it likely holds per-measurement parameters: "
                "sample one measurement at a time (B = 1) or use n_samples=1"
            )
    return Problem(y_rep, physics, shape, batch, n_samples, lik, _repeat_cond(cond, batch, n_samples))
