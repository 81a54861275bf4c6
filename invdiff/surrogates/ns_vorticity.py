r"""The 2D Navier-Stokes vorticity inverse problem (InverseBench style): set-up, data, exact prior.

Kolmogorov flow on the torus :math:`[0, 2\pi)^2` (:class:`~invdiff.operators.pde.NavierStokes2D`):

.. math::
    \omega_t + \mathbf u \cdot \nabla \omega = \nu \Delta \omega - \alpha\,\omega - 4 \cos(4 y),
    \qquad \nu = 1/200 \;(\mathrm{Re} = 1/\nu = 200), \quad \alpha = 0.1,

solved to :math:`T = 1` on an :math:`n \times n` grid (default 64). The unknown is the initial
vorticity :math:`\omega_0`, a zero-mean Gaussian random field (the FNO covariance,
:func:`invdiff.datasets.pde.gaussian_random_field` with :math:`\alpha = 2.5, \tau = 7`, times
``scale`` = 3: standard deviation about 4, RMS speed about 1.3); the data are :math:`\omega(T)`
sub-sampled by a factor :math:`k \in \{2, 4, 8\}` in each direction, plus Gaussian noise:

.. math:: y = P_k\, S_T(\omega_0) + \sigma_y\, n .

Because :math:`\omega_0` is Gaussian with a covariance diagonal in Fourier space,
:math:`\hat\omega_0(m) \sim \mathcal N(0, N\, s_m)`, :math:`s_m = c^2\sigma^2(|m|^2 + \tau^2)^{-\alpha}`,
its exact denoiser is a Fourier multiplier (:class:`GRFPrior`):

.. math:: D(x, \sigma) = \mathcal F^{-1}\Big[\frac{s_m}{s_m + \sigma^2}\, \mathcal F x\Big],

the reference against which a trained vorticity prior is judged.

>>> prob = VorticityProblem(n=16)
>>> w0 = prob.sample(2, generator=torch.Generator().manual_seed(0))
>>> w0.shape, prob.observe(prob.solver(w0), 4).shape
(torch.Size([2, 1, 16, 16]), torch.Size([2, 1, 4, 4]))
"""
from __future__ import annotations

import math

import torch

from invdiff.datasets.pde import gaussian_random_field

LENGTH = 2 * math.pi
NU, DRAG, T_FINAL = 1.0 / 200.0, 0.1, 1.0
GRF_ALPHA, GRF_TAU, GRF_SCALE, GRF_LENGTH = 2.5, 7.0, 12.0, 1.0


class VorticityProblem:
    """Solver, prior samples and sub-sampling of the vorticity inverse problem on an ``n x n`` grid."""

    def __init__(self, n: int = 64, t_final: float = T_FINAL):
        from invdiff.operators.pde import NavierStokes2D

        if int(n) != n or n < 8 or n % 8:
            raise ValueError(f"n: expected a multiple of 8 (8x sub-sampling), got {n}")
        self.n = int(n)
        self.solver = NavierStokes2D(n=self.n, nu=NU, length=LENGTH, forcing="kolmogorov", forcing_amplitude=1.0,
                                     forcing_wavenumber=4, drag=DRAG, t_final=t_final, n_frames=2, u_max=5.0,
                                     output="final")

    def sample(self, n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
        """``n`` initial vorticities ``(n, 1, N, N)`` from the prior."""
        w = GRF_SCALE * gaussian_random_field((self.n, self.n), GRF_ALPHA, GRF_TAU, length=GRF_LENGTH, generator=generator, n=n)
        return w[:, None].to(device=device, dtype=dtype)

    @staticmethod
    def observe(w: torch.Tensor, factor: int) -> torch.Tensor:
        """Every ``factor``-th grid point in each direction: ``(..., N, N) -> (..., N/k, N/k)``."""
        if int(factor) != factor or factor < 1 or w.shape[-1] % factor or w.shape[-2] % factor:
            raise ValueError(f"factor: expected a positive divisor of the grid {tuple(w.shape[-2:])}, got {factor}")
        return w[..., ::factor, ::factor]

    def prior(self) -> "GRFPrior":
        """The exact denoiser of the initial-vorticity prior."""
        return GRFPrior(self.n)


class VorticityPhysics:
    """Builds the deepinv Physics :math:`\\omega_0 \\mapsto P_k S_T(\\omega_0)` with Gaussian noise ``sigma``."""

    @staticmethod
    def make(problem: VorticityProblem, factor: int, sigma: float):
        from deepinv.physics import GaussianNoise, Physics

        class _SubsampledNS(Physics):
            def __init__(self):
                super().__init__(noise_model=GaussianNoise(sigma))
                self.x_shape = (1, problem.n, problem.n)

            def A(self, x, **kwargs):
                return problem.observe(problem.solver(x), factor)

        return _SubsampledNS()


class GRFPrior(torch.nn.Module):
    r"""Exact denoiser of the initial-vorticity Gaussian random field (a Fourier multiplier).

    .. math:: D(x, \sigma) = \mathcal F^{-1}\big[s_m / (s_m + \sigma^2)\, \mathcal F x\big]

    with :math:`s_m = N c^2 \sigma^2 (|k_m|^2 + \tau^2)^{-\alpha}` the variance of mode :math:`m` in
    units of white noise of unit variance (0 for the mean mode).
    ``sample(n)`` draws from the prior itself.

    >>> D = GRFPrior(8)
    >>> x = torch.randn(1, 1, 8, 8)
    >>> bool((D(x, 1e-6) - (x - x.mean())).abs().max() < 1e-3)   # sigma -> 0: identity on zero-mean fields
    True
    """

    def __init__(self, n: int):
        super().__init__()
        f = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
        fr = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64)
        k2 = (2 * math.pi * f[:, None] / GRF_LENGTH) ** 2 + (2 * math.pi * fr[None, :] / GRF_LENGTH) ** 2
        sigma = GRF_TAU ** (GRF_ALPHA - 1.0)
        # Var(F w)_m = N^2 c^2 sigma^2 (|k|^2 + tau^2)^-alpha against N sigma_noise^2 for white noise
        s = n * n * (GRF_SCALE * sigma) ** 2 * (k2 + GRF_TAU**2) ** (-GRF_ALPHA) * (k2 > 0)
        self.register_buffer("s", s)
        self.n = n
        self.x_shape = (1, n, n)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1, 1)
        gain = self.s / (self.s + sigma**2)
        return torch.fft.irfft2(gain.to(x.dtype) * torch.fft.rfft2(x), s=x.shape[-2:])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return VorticityProblem.sample(self, n, generator, device=self.s.device)

    def neg_log_prob(self, w: torch.Tensor) -> torch.Tensor:
        r""":math:`\tfrac12 \sum_m |\hat w_m|^2 / (N s_m)` per sample of ``w`` ``(B, 1, N, N)`` (up to a constant; the mean mode,
        which the prior fixes at 0, is left out), the quadratic of the MAP baseline."""
        w_hat = torch.fft.rfft2(w)
        inv = torch.where(self.s > 0, 1.0 / (self.n**2 * torch.where(self.s > 0, self.s, 1.0)), 0.0).to(w.dtype)
        weight = torch.ones_like(inv)  # rfft2 keeps half of the last axis: interior columns count twice
        weight[:, 1:(self.n + 1) // 2] = 2.0
        return 0.5 * (weight * inv * w_hat.abs() ** 2).flatten(1).sum(1)


def make_generator(n: int = 64):
    """Training-data sampler ``sample(n_samples, generator, device, dtype)`` of the initial vorticity
    (the ``"ns-vorticity"`` generator of :func:`invdiff.diffusion.training.make_data`)."""
    prob = VorticityProblem.__new__(VorticityProblem)
    prob.n = int(n)

    def sample(m: int, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
        return VorticityProblem.sample(prob, m, generator, device, dtype)

    return sample
