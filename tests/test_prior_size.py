"""Priors at other sizes only on purpose (issue 17): a size mismatch is an error unless asked for.

References: the shape rules of the U-Net (sizes divisible by 2^(levels-1)), the samplers' own
prior/operator check, and the warning that must name both sizes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import invdiff
import invdiff.operators as ops
from invdiff.diffusion.gmm import Gaussian
from invdiff.diffusion.zoo import use_at_size
from invdiff.samplers import make


def test_size_mismatch_is_refused_without_the_option():
    prior = invdiff.load_prior("ct-phantom-64")
    physics = ops.make("ct-sparse-view", size=128, views=8, sigma=0.01)
    y = physics(torch.zeros(1, 1, 128, 128))
    with pytest.raises(ValueError, match="shape mismatch"):
        make("red-diff", prior, steps=1, progress=False).sample(y, physics)


def test_use_at_size_warns_and_runs():
    with pytest.warns(UserWarning, match=r"\(1, 64, 64\).*\(1, 128, 128\)"):
        prior = invdiff.load_prior("ct-phantom-64", size=128)
    assert prior.x_shape == (1, 128, 128)
    physics = ops.make("ct-sparse-view", size=128, views=8, sigma=0.01)
    y = physics(torch.zeros(1, 1, 128, 128))
    out = make("red-diff", prior, steps=1, progress=False).sample(y, physics, generator=torch.Generator().manual_seed(0))
    assert out.samples.shape == (1, 1, 1, 128, 128) and bool(torch.isfinite(out.samples).all())
    with pytest.warns(UserWarning):
        assert use_at_size(invdiff.load_prior("ct-phantom-64"), (64, 128)).x_shape == (1, 64, 128)


def test_use_at_size_refuses_what_the_network_cannot_take():
    prior = invdiff.load_prior("ct-phantom-64")  # 4 levels: multiples of 8
    for bad in (100, 4, (64,), 64.0):
        with pytest.raises(ValueError, match="size"):
            use_at_size(prior, bad)
    with pytest.raises(ValueError, match="only U-Net priors"):
        use_at_size(Gaussian(torch.zeros(4), 1.0), 8)


def test_reconstruct_prior_size_agnostic_flag(tmp_path, capsys):
    from invdiff.cli import main

    np.save(tmp_path / "x.npy", np.zeros((1, 128, 128), dtype=np.float32))
    args = ["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"size": 128, "views": 8, "sigma": 0.01}',
            "--sampler", "red-diff", "--prior", "ct-phantom-64", "--steps", "1", "--samples", "1",
            "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.h5")]
    assert main(args) == 2  # refused: the prior was trained at 64 x 64
    assert "models signals of shape (1, 64, 64)" in capsys.readouterr().err
    assert main(args + ["--prior-size-agnostic"]) == 0
    assert "warning: prior ct-phantom-64 was trained on signals of shape (1, 64, 64) and is used at (1, 128, 128)" in capsys.readouterr().err
    assert (tmp_path / "o.h5").exists()


def test_shipped_128_prior_loads_and_denoises():
    """ct-phantom-128 (trained at 128 x 128 by configs/ct-phantom-128.json): offline, its card
    names the command, and it denoises held-out phantoms far better than the identity (whose MSE
    is exactly sigma^2) and than the data mean."""
    from invdiff.datasets.phantoms import test_set
    from invdiff.diffusion.zoo import card

    D = invdiff.load_prior("ct-phantom-128")
    c = card("ct-phantom-128")
    assert D.x_shape == (1, 128, 128) and c["command"] == f"invdiff train --config configs/ct-phantom-128.json --steps {c['steps']}"
    x0 = test_set("ct-phantom", 2, 128)
    sigma = 0.2
    x = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mse = float((D(x, sigma) - x0).pow(2).mean())
    assert mse < 0.25 * sigma**2 and mse < 0.25 * float(x0.var())
