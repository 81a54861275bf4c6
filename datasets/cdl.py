r"""3GPP TR 38.901 CDL channels through Sionna (optional extra ``invdiff[wireless]``: ``sionna-no-rt``).

Narrowband MIMO channels between uniform linear arrays (half-wavelength, omni elements, single
polarisation) from Sionna's clustered-delay-line model (CDL-A ... CDL-E, TR 38.901 Table
7.7.1-1 ... 7.7.1-5): the path coefficients :math:`a_{l}` and delays :math:`\tau_l` of Sionna
give the frequency response at baseband frequency ``f`` (0: the carrier),

.. math:: H = \sum_l a_l\, e^{-j 2\pi f \tau_l},

scaled per channel to :math:`\|H\|_F^2 = N_r N_t` like the HPSM channels
(``datasets/channels_hpsm.md``). These are the channels on which Arvinte and Tamir (2022) trained
their score-based estimator. Sionna draws its own random numbers: ``seed`` sets
``sionna.phy.config.seed`` (an int, not a ``torch.Generator``).

>>> H = cdl_channels(2, model="C", seed=0)          # doctest: +SKIP
>>> H.shape                                         # doctest: +SKIP
torch.Size([2, 2, 16, 16])
"""
from __future__ import annotations

import math

import torch

from invdiff.datasets.channels import to_real

__all__ = ["cdl_channels", "cdl_paths", "available"]


def available() -> bool:
    """Whether Sionna (``pip install invdiff[wireless]``) is importable."""
    try:
        import sionna.phy.channel.tr38901  # noqa: F401
    except ImportError:
        return False
    return True


def _require():
    try:
        import sionna.phy
        from sionna.phy.channel.tr38901 import CDL, PanelArray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("CDL channels need Sionna: pip install 'invdiff[wireless]' (sionna-no-rt)") from e
    return sionna.phy, CDL, PanelArray


def cdl_paths(n: int, model: str = "C", nr: int = 16, nt: int = 16, delay_spread: float = 100e-9,
              fc: float = 28e9, seed: int = 0):
    """Sionna's CDL path coefficients ``a`` (n, Nr, Nt, paths) and delays ``tau`` (n, paths) in seconds
    (downlink: Tx = base station with ``nt`` antennas, Rx = user with ``nr``)."""
    if model not in ("A", "B", "C", "D", "E"):
        raise ValueError(f"model: expected one of 'A'..'E', got {model!r}")
    for name, v in (("n", n), ("nr", nr), ("nt", nt)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    phy, CDL, PanelArray = _require()
    phy.config.seed = int(seed)

    def ula(m):
        return PanelArray(num_rows_per_panel=1, num_cols_per_panel=m, polarization="single", polarization_type="V",
                          antenna_pattern="omni", carrier_frequency=fc, device="cpu", precision="double")

    cdl = CDL(model=model, delay_spread=delay_spread, carrier_frequency=fc, ut_array=ula(nr), bs_array=ula(nt),
              direction="downlink", device="cpu", precision="double")
    a, tau = cdl(n, num_time_steps=1, sampling_frequency=1.0)
    return a[:, 0, :, 0, :, :, 0], tau[:, 0, 0, :]


def cdl_channels(n: int, model: str = "C", nr: int = 16, nt: int = 16, delay_spread: float = 100e-9,
                 fc: float = 28e9, frequency: float = 0.0, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` narrowband CDL channels ``(n, 2, Nr, Nt)`` (real, imag), ``||H||_F^2 = Nr Nt`` each."""
    a, tau = cdl_paths(n, model, nr, nt, delay_spread, fc, seed)
    H = (a * torch.exp(-2j * math.pi * frequency * tau)[:, None, None, :]).sum(-1)
    H = H * math.sqrt(nr * nt) / H.flatten(1).norm(dim=1)[:, None, None]
    return to_real(H, dtype)
