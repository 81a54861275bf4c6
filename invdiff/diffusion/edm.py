"""EDM preconditioning and loss (Karras, Aittala, Aila & Laine, "Elucidating the Design Space of
Diffusion-Based Generative Models", NeurIPS 2022, Table 1).

A raw network ``F(x, c_noise)`` becomes a denoiser ``D(x, sigma) = E[x0 | x]`` through

.. math::
    D(x, \\sigma) = \\mu + c_{skip}(\\sigma)\\,(x - \\mu)
                    + c_{out}(\\sigma)\\, F\\big(c_{in}(\\sigma)\\,(x - \\mu),\\ c_{noise}(\\sigma)\\big),

    c_{skip} = \\frac{\\sigma_d^2}{\\sigma^2 + \\sigma_d^2}, \\quad
    c_{out} = \\frac{\\sigma \\sigma_d}{\\sqrt{\\sigma^2 + \\sigma_d^2}}, \\quad
    c_{in} = \\frac{1}{\\sqrt{\\sigma^2 + \\sigma_d^2}}, \\quad
    c_{noise} = \\tfrac14 \\log \\sigma,

where :math:`\\sigma_d` is the data standard deviation. The data mean :math:`\\mu` (0 in the
paper, whose images are centred in [-1, 1]) lets a prior live directly on images in [0, 1]: it
is the EDM preconditioning of the centred data. Training minimises

.. math::
    \\mathbb{E}_{\\sigma, x_0, n}\\Big[\\lambda(\\sigma)\\, \\| D(x_0 + \\sigma n, \\sigma) - x_0 \\|^2\\Big],
    \\quad \\ln \\sigma \\sim \\mathcal N(P_{mean}, P_{std}^2), \\quad
    \\lambda(\\sigma) = \\frac{\\sigma^2 + \\sigma_d^2}{(\\sigma \\sigma_d)^2},

with :math:`P_{mean} = -1.2`, :math:`P_{std} = 1.2` (so the effective target of ``F`` has unit
variance at every sigma).

>>> import torch
>>> from invdiff.diffusion.networks import MLP
>>> D = EDMPrecond(MLP(dim=2, hidden=16), sigma_data=0.5)
>>> D(torch.zeros(3, 2), 1.0).shape            # untrained net: D = c_skip * x
torch.Size([3, 2])
"""
from __future__ import annotations

import torch
from torch import nn

from invdiff.diffusion.denoiser import expand_sigma
from invdiff.utils.checks import check_positive
from invdiff.utils.random import randn, randn_like

__all__ = ["EDMPrecond", "edm_coefficients", "sample_sigma", "loss_weight", "edm_loss"]


def edm_coefficients(sigma: torch.Tensor, sigma_data: float):
    """``(c_skip, c_out, c_in, c_noise)`` of EDM for a tensor ``sigma`` (Karras et al. 2022, Table 1)."""
    s2, d2 = sigma**2, sigma_data**2
    c_skip = d2 / (s2 + d2)
    c_out = sigma * sigma_data / torch.sqrt(s2 + d2)
    c_in = 1 / torch.sqrt(s2 + d2)
    c_noise = torch.log(sigma) / 4
    return c_skip, c_out, c_in, c_noise


class EDMPrecond(nn.Module):
    """A network ``F(x, c_noise)`` preconditioned into a prior ``D(x, sigma)`` (see module doc).

    Parameters
    ----------
    net : the raw network, ``net(x, c_noise)`` with ``c_noise`` of shape (B,).
    sigma_data : standard deviation of the (centred) training data.
    data_mean : mean of the training data, a float (0 gives the paper's formula).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, data_mean: float = 0.0):
        super().__init__()
        check_positive("sigma_data", sigma_data)
        self.net = net
        self.sigma_data = float(sigma_data)
        self.data_mean = float(data_mean)

    def forward(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s = expand_sigma(sigma, x)
        if bool((s <= 0).any()):
            raise ValueError(f"sigma: expected > 0, got min {float(s.min())}")
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        xc = x - self.data_mean
        dtype = next(self.net.parameters()).dtype
        F_x = self.net((c_in * xc).to(dtype), c_noise.reshape(-1).to(dtype)).to(x.dtype)
        return self.data_mean + c_skip * xc + c_out * F_x


def sample_sigma(n: int, generator: torch.Generator | None = None, P_mean: float = -1.2, P_std: float = 1.2, device=None, dtype=torch.float32) -> torch.Tensor:
    """Training noise levels ``sigma = exp(P_mean + P_std * z)``, ``z ~ N(0, 1)``, shape (n,)."""
    check_positive("P_std", P_std)
    return torch.exp(P_mean + P_std * randn((n,), generator=generator, device=device, dtype=dtype))


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM loss weight ``lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2``."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(
    denoiser: EDMPrecond,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    P_mean: float = -1.2,
    P_std: float = 1.2,
) -> torch.Tensor:
    """The EDM denoising loss of one batch (a scalar: mean over batch and elements).

    .. math:: \\lambda(\\sigma)\\, \\| D(x_0 + \\sigma n, \\sigma) - x_0 \\|^2 / \\dim(x_0)

    >>> from invdiff.diffusion.networks import MLP
    >>> D = EDMPrecond(MLP(dim=2, hidden=16), sigma_data=1.0)
    >>> float(edm_loss(D, torch.zeros(4, 2), torch.Generator().manual_seed(0))) > 0
    True
    """
    sigma = sample_sigma(x0.shape[0], generator, P_mean, P_std, device=x0.device, dtype=x0.dtype)
    n = randn_like(x0, generator)
    s = expand_sigma(sigma, x0)
    D = denoiser(x0 + s * n, sigma)
    w = loss_weight(s, denoiser.sigma_data)
    return (w * (D - x0) ** 2).mean()
