"""Shipped, trained priors, loaded offline: ``invdiff.load_prior("ct-phantom-64")``.

Each prior is a file ``invdiff/assets/<name>.safetensors`` (EMA weights in float16 to keep the
package small, the training card in the file's metadata) with its card beside it as
``<name>.json`` (architecture, preconditioning, data generator and parameters, seed, steps,
final loss, and the command that reproduces it from ``configs/<name>.json``).

=================  ===========  ======================================================
name               x_shape      data
=================  ===========  ======================================================
ct-phantom-64      (1,64,64)    random-ellipse CT phantoms in [0, 1] (datasets/ct_phantoms.md)
ct-phantom-128     (1,128,128)  the same at 128 x 128; small (see its card, docs/benchmarks/scale.md)
mri-phantom-64     (2,64,64)    complex MR phantoms, (real, imag) (datasets/mri_phantoms.md)
hpsm-60ghz-16      (2,16,16)    HPSM 60 GHz UM-MIMO channels, (real, imag) (datasets/channels_hpsm.md)
=================  ===========  ======================================================

>>> import invdiff, torch
>>> D = invdiff.load_prior("ct-phantom-64")                     # doctest: +SKIP
>>> D(torch.rand(1, 1, 64, 64), 0.1).shape                      # doctest: +SKIP
torch.Size([1, 1, 64, 64])
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from invdiff.diffusion.edm import EDMPrecond
from invdiff.diffusion.training import load_checkpoint
from invdiff.utils.io import atomic_path

__all__ = ["load_prior", "available", "card", "export_prior", "use_at_size", "ASSETS"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def available() -> list[str]:
    """Names of the shipped priors."""
    return sorted(p.stem for p in ASSETS.glob("*.safetensors"))


def _path(name: str) -> Path:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    path = ASSETS / f"{name}.safetensors"
    if not path.exists():
        raise ValueError(f"unknown prior {name!r}; shipped priors: {available()}")
    return path


def card(name: str) -> dict:
    """The training card of a shipped prior (a dict)."""
    return json.loads((ASSETS / f"{_path(name).stem}.json").read_text())


def load_prior(name: str, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
               size: int | tuple[int, ...] | None = None) -> EDMPrecond:
    """The shipped prior ``D(x, sigma)`` called ``name``, on ``device`` in ``dtype`` (eval mode, no grad).

    The module has ``.card`` (its training card) and ``.x_shape`` (one signal, no batch axis).
    ``size`` uses the (fully convolutional) prior at another image size, on purpose and with a
    warning (:func:`use_at_size`); by default a size mismatch with the operator is an error.
    """
    prior = load_checkpoint(_path(name), device=device, dtype=dtype)
    if "x_shape" in prior.card:  # e.g. channels (2, Nr, Nt)
        prior.x_shape = tuple(prior.card["x_shape"])
    else:
        trained = prior.card["data"]["params"].get("size", 64)
        prior.x_shape = (prior.card["network"]["in_channels"], trained, trained)
    prior.name = name
    return prior if size is None else use_at_size(prior, size)


def use_at_size(prior, size: int | tuple[int, ...]):
    """Use a fully convolutional U-Net prior on signals of another spatial ``size``, explicitly.

    A prior records the size it was trained at (``x_shape``) and samplers refuse an operator of
    another size. A U-Net (convolutions, and attention over all positions) can run at any size
    divisible by :math:`2^{L-1}` (``L`` levels); whether it is any good there is not known from
    training, so this sets ``prior.x_shape = (C, *size)`` in place (returning the prior) and
    issues a ``UserWarning`` naming both sizes. Refused for priors whose card does not say they
    are a U-Net (MLPs, exact mixtures) and for sizes the network cannot take.

    >>> D = use_at_size(load_prior("ct-phantom-64"), 128)   # doctest: +SKIP
    >>> D.x_shape                                           # doctest: +SKIP
    (1, 128, 128)
    """
    import warnings

    from invdiff.utils.validate import prior_x_shape

    net = (getattr(prior, "card", None) or {}).get("network", {})
    spatial = {"unet": 2, "unet1d": 1}.get(net.get("name"))
    old = prior_x_shape(prior)
    if spatial is None or old is None or "channels" not in net:
        raise ValueError(f"size: only U-Net priors with a training card run at other sizes; this prior's network is "
                         f"{net.get('name', type(prior).__name__)!r}")
    size = (size,) * spatial if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else size
    if not isinstance(size, tuple) or len(size) != spatial or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ValueError(f"size: expected an int or {spatial} ints, got {size!r}")
    step = 2 ** (len(net["channels"]) - 1)
    if any(s < step or s % step for s in size):
        raise ValueError(f"size: this U-Net has {len(net['channels'])} levels; expected sizes that are multiples of {step}, got {size}")
    new = (old[0], *size)
    if new != old:
        warnings.warn(f"prior {getattr(prior, 'name', '')!s} was trained on signals of shape {old} and is used at {new} "
                      "(fully convolutional: it runs, but it never saw this size; check its results)", UserWarning, stacklevel=2)
    prior.x_shape = new
    return prior


def export_prior(run_dir: str | os.PathLike, name: str, command: str | None = None, x_shape=None) -> Path:
    """Copy the EMA weights of a training run into ``invdiff/assets/<name>`` as float16.

    ``command`` (recorded in the card) is the command that reproduces the run, e.g.
    ``invdiff train --config configs/ct-phantom-64.json --steps 4000``. ``x_shape`` (one signal,
    no batch axis) is recorded in the card for priors whose signals are not square images.
    """
    from safetensors.torch import load_file, save_file

    run_dir = Path(run_dir)
    c = json.loads((run_dir / "card.json").read_text())
    if command is not None:
        c["command"] = command
    if x_shape is not None:
        c["x_shape"] = list(x_shape)
    c["weights_dtype"] = "float16"
    weights = {k: v.to(torch.float16).contiguous() for k, v in load_file(str(run_dir / "model.safetensors")).items()}
    out = ASSETS / f"{name}.safetensors"
    with atomic_path(out) as tmp:
        save_file(weights, str(tmp), metadata={"card": json.dumps(c)})
    with atomic_path(ASSETS / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(c, indent=2) + "\n")
    for p in (out, ASSETS / f"{name}.json"):  # package data: world-readable (mkstemp makes 0600)
        p.chmod(0o644)
    return out
