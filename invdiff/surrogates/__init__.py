"""PDE surrogates: diffusion over whole trajectories (WDNO, wavelet domain) and baselines.

* :mod:`~invdiff.surrogates.wavelet`: periodised 2D DWT over (t, x), bands as channels, band scaling.
* :mod:`~invdiff.surrogates.wdno`: the conditional trajectory prior ``D(x, sigma, u0=, f=)`` and sampler.
* :mod:`~invdiff.surrogates.fno`: a minimal FNO and persistence (baselines).
* :mod:`~invdiff.surrogates.data`, :mod:`~invdiff.surrogates.train`: Burgers data, training, saving.
* :mod:`~invdiff.surrogates.latent`: the latent diffusion surrogate (autoencoder + latent denoiser ``D(z, sigma, u0=, nu=|text=)``),
  trained on periodic Burgers with random viscosity (:mod:`~invdiff.surrogates.data_periodic`, :mod:`~invdiff.surrogates.latent_train`).
* :func:`load_surrogate`: the shipped Burgers surrogates.
"""
from __future__ import annotations

from pathlib import Path

from invdiff.surrogates.fno import FNO2d, persistence
from invdiff.surrogates.latent import LatentSurrogate, TrajectoryAutoencoder, parse_parameters
from invdiff.surrogates.wavelet import DWT2, BandScaler
from invdiff.surrogates.wdno import WDNO, generate, overwrite

__all__ = ["DWT2", "BandScaler", "WDNO", "FNO2d", "persistence", "generate", "overwrite", "load_surrogate", "available",
           "LatentSurrogate", "TrajectoryAutoencoder", "parse_parameters"]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "surrogates"


def available() -> list[str]:
    """Names of the shipped surrogates."""
    return sorted(p.stem for p in ASSETS.glob("*.safetensors"))


def load_surrogate(name: str = "burgers-wdno-32x64"):
    """A shipped surrogate (eval mode, ``.card`` attached), e.g. ``load_surrogate("burgers-wdno-32x64")`` or
    ``load_surrogate("burgers-latent-32x64")`` (a :class:`LatentSurrogate`)."""
    import json

    from invdiff.surrogates.train import load_model

    if name not in available():
        raise ValueError(f"unknown surrogate {name!r}; shipped: {available()}")
    if json.loads((ASSETS / f"{name}.json").read_text()).get("model") == "latent":
        from invdiff.surrogates.latent_train import load_latent

        return load_latent(ASSETS / f"{name}.safetensors")
    return load_model(ASSETS / f"{name}.safetensors")
