r"""Sequential Monte Carlo posterior samplers over a diffusion prior: the ensemble sampler of
Chen, Ren, Min, Ying & Izzo (2025) and twisted diffusion sampling (TDS, Wu et al. 2023).

Both carry ``N`` weighted particles per measurement from ``sigma_max`` down to 0. Particles are
batched (``N x B`` rows, one denoiser call per step), log-weights stay in log space, and the
particles are resampled when the effective sample size ``ESS = 1 / sum_k w_k^2`` falls below
``ess_threshold * N`` (systematic or multinomial resampling, :func:`resample`). ``trace["ess"]``
holds the ESS of every step (before resampling), ``trace["resampled"]`` the steps that resampled.

SMC ensemble (Chen et al. 2025, "Solving Inverse Problems via Diffusion-Based Priors: An
Approximation-Free Ensemble Sampling Approach"). With :math:`\mu_y(x)` the negative
log-likelihood evaluated at the *noisy* particle, the targets are

.. math::
    q_\sigma(x) \propto p_\sigma(x)\, e^{-\mu_y(x)}, \qquad
    q_{\sigma_{max}} \approx \mathcal N(0, \sigma_{max}^2 I)\, e^{-\mu_y}, \qquad
    q_0 = p(x \mid y).

Between levels the particles follow the prior's reverse dynamics (drift :math:`H`, noise
:math:`v`) corrected by the likelihood, and their weights follow the reweighting term of the
modified PDE:

.. math::
    dx = (H - v^2 \nabla\mu_y)\,dt + v\, dW, \qquad
    d\log w = \Big[\tfrac{v^2}{2}\big(\|\nabla\mu_y\|^2 - \Delta\mu_y\big)
              - H \cdot \nabla\mu_y\Big] dt .

Here the prior dynamics are the DDIM/ancestral kernel
:math:`p(x' \mid x) = \mathcal N(m(x), \tau I)` of :func:`invdiff.diffusion.solvers.ancestral_sigmas`
(``eta = 1``: DDPM, :math:`v = g`; smaller ``eta`` moves towards the ODE, :math:`v \to 0`).

*The stiff 1/sigma_y^2 term is annealed and split exactly* (``split="exact"``, the default for
a linear operator with Gaussian noise). Annealed: the likelihood of the noisy particle is taken
with the noise a flat prior would add, :math:`\mu_\sigma(x) = -\log \mathcal N(y; A x, \sigma_y^2 I
+ c^2 \sigma^2 A A^\top)` (``inflation = c``, default 1; ``c = 0`` is the paper's :math:`\mu_y` at
every level); in VE variables the paper's targets make the weights carry the likelihood through
:math:`\sigma_{max}^2/\sigma_y^2` units of time and the ensemble collapses onto few ancestors.
Split exactly: each step samples the product of the prior kernel and this likelihood, which is
Gaussian, and weights by its normaliser (``c = 0`` shown):

.. math::
    x' \sim \mathcal N(m, \tau I)\, e^{-\mu_y(x')}, \qquad
    \log w \mathrel{+}= \log \mathcal N\big(y;\, A m,\, \sigma_y^2 I + \tau A A^\top\big) + \mu_y(x).

This is a fully adapted (auxiliary) particle filter for the path measure whose time marginals
are :math:`q_\sigma`: no approximation beyond the prior's discretisation, stable for any
:math:`\sigma_y` and step size, and to first order in :math:`\tau` it is exactly the drift
:math:`-v^2 \nabla\mu_y` and the weight rate above (the Laplacian of a linear-Gaussian
:math:`\mu_y` is the constant :math:`\|A\|_F^2/\sigma_y^2`, which cancels on normalisation).
Dense operators (``physics.matrix``) use the SVD; other ``LinearPhysics`` use ``physics.prox_l2``
(the mean, and perturb-and-MAP for the noise). ``split="explicit"`` is the paper's Euler scheme
above for any operator, with a Hutchinson estimate of :math:`\Delta\mu_y` for nonlinear
operators or Poisson noise, and a scalar annealing of the likelihood (see :class:`SMCEnsemble`).

Twisted SMC (:class:`TwistedSMC`, Wu et al. 2023, TDS): particles move by the guided kernel
:math:`\mathcal N(m + \tau \nabla \log \tilde p_\sigma, \tau I)` with the twisting function
:math:`\tilde p_\sigma(y \mid x) = \mathcal N(y; \mathcal A(D(x, \sigma)), \sigma_y^2 + \kappa_\sigma)`
and weights :math:`p(x' \mid x)\, \tilde p_{\sigma'}(y \mid x') / (q(x' \mid x)\, \tilde p_\sigma(y \mid x))`;
one denoiser call and one vector-Jacobian product per step, any operator.

Example
-------
>>> import torch
>>> from invdiff.diffusion.gmm import Gaussian
>>> from invdiff.operators import Matrix
>>> prior = Gaussian(torch.zeros(2, dtype=torch.float64), 1.0)
>>> physics = Matrix(torch.eye(2, dtype=torch.float64)[:1], sigma=0.1)
>>> smc = SMCEnsemble(prior, steps=50, sigma_max=20.0, progress=False)
>>> out = smc.sample(torch.ones(1, 1, dtype=torch.float64), physics, n_samples=256,
...                  generator=torch.Generator().manual_seed(0))
>>> out.samples.shape, out.log_weights.shape, out.nfe
(torch.Size([256, 1, 2]), torch.Size([256, 1]), 50)
>>> round(float(out.mean()[0, 0]), 1)     # exact posterior mean 1 / 1.01 = 0.99
1.0
"""
from invdiff.samplers.smc.base import SMCBase, analytic_x0_var
from invdiff.samplers.smc.ensemble import SMCEnsemble
from invdiff.samplers.smc.resampling import ess, multinomial_resample, resample, systematic_resample
from invdiff.samplers.smc.twisted import TwistedSMC

__all__ = ["SMCBase", "SMCEnsemble", "TwistedSMC", "analytic_x0_var", "ess", "resample", "systematic_resample",
           "multinomial_resample"]
