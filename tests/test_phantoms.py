"""Phantom generators and data loaders: ranges, analytic ellipse areas, phase smoothness, seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from invdiff.datasets.loaders import load_array, load_hdf5, save_hdf5
from invdiff.datasets.phantoms import (
    TEST_SEED,
    ct_phantoms,
    ellipse_masks,
    make_generator,
    mri_phantoms,
    test_set as held_out_set,
)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("a,b,theta", [(0.5, 0.3, 0.0), (0.2, 0.6, 0.7), (0.35, 0.35, 1.3)])
def test_ellipse_area_matches_pi_ab(a, b, theta):
    # area of the mask in normalised units ([-1, 1]^2 has area 4) vs pi a b; the one-pixel ramp
    # is centred on the boundary, so the error is O(pixel^2 * perimeter / pixel) -> small at 256
    size = 256
    t = lambda v: torch.tensor([[v]], dtype=torch.float64)
    m = ellipse_masks(t(0.1), t(-0.05), t(a), t(b), t(theta), size)
    area = float(m.sum()) * (2 / size) ** 2
    assert area == pytest.approx(math.pi * a * b, rel=0.01)


def test_ct_range_shape_and_determinism():
    x = ct_phantoms(8, size=32, generator=g(3))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, ct_phantoms(8, size=32, generator=g(3)))
    assert not torch.equal(x, ct_phantoms(8, size=32, generator=g(4)))
    # background outside the head (corners) is exactly 0; every phantom has content
    assert float(x[..., 0, 0].abs().max()) == 0.0
    assert bool((x.flatten(1).max(1).values > 0.1).all())


def test_ct_resolution_independent():
    # same seed -> same ellipses: a 128 phantom average-pooled to 64 matches the 64 phantom
    # except on a band of edge pixels (anti-aliasing differs there)
    x64 = ct_phantoms(4, size=64, generator=g(1), dtype=torch.float64)
    x128 = F.avg_pool2d(ct_phantoms(4, size=128, generator=g(1), dtype=torch.float64), 2)
    diff = (x64 - x128).abs()
    assert float(diff.mean()) < 0.02
    assert float((diff > 0.25).double().mean()) < 0.02


def test_mri_magnitude_and_phase_smoothness():
    n, size, max_phase = 6, 64, math.pi / 2
    x = mri_phantoms(n, size=size, generator=g(2), dtype=torch.float64, max_phase=max_phase)
    assert x.shape == (n, 2, size, size)
    z = torch.complex(x[:, 0], x[:, 1])
    assert float(z.abs().max()) <= 1 + 1e-12
    # phase = max_phase * mean_j cos(pi f_j . r + phi_j) + const with |f_j|_inf <= 1:
    # |grad phase| <= max_phase * pi * sqrt(2), so neighbours differ by at most that * pixel
    bound = max_phase * math.pi * math.sqrt(2) * (2 / size)
    both = (z.abs()[:, :, 1:] > 0.05) & (z.abs()[:, :, :-1] > 0.05)
    dphi = torch.angle(z[:, :, 1:] * z[:, :, :-1].conj())[both]
    assert float(dphi.abs().max()) <= bound + 1e-9


def test_follows_dtype_and_rejects_bad_input():
    assert ct_phantoms(2, 16, g(), dtype=torch.float64).dtype == torch.float64
    assert mri_phantoms(2, 16, g(), dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="n: expected a positive int"):
        ct_phantoms(0, 16)
    with pytest.raises(ValueError, match="size"):
        mri_phantoms(2, 4)
    with pytest.raises(ValueError, match="unknown phantom generator"):
        make_generator("brain")


def test_test_set_fixed_and_disjoint_from_training_seeds():
    a = held_out_set("ct-phantom", 4, 32)
    assert torch.equal(a, held_out_set("ct-phantom", 4, 32))
    assert torch.equal(a, make_generator("ct-phantom", size=32)(4, generator=g(TEST_SEED)))
    train = make_generator("ct-phantom", size=32)(64, generator=g(1))  # the training config's seed
    dist = torch.cdist(a.flatten(1), train.flatten(1))
    assert float(dist.min()) > 1.0  # no held-out phantom is (near) a training phantom


def test_loaders_roundtrip(tmp_path):
    x = mri_phantoms(2, 16, g()).numpy()
    np.save(tmp_path / "x.npy", x)
    assert torch.equal(load_array(tmp_path / "x.npy", expected_shape=(2, 16, 16)), torch.from_numpy(x))
    save_hdf5(tmp_path / "x.h5", {"x": x}, {"seed": 0, "meta": {"a": 1}})
    arr, attrs = load_hdf5(tmp_path / "x.h5")
    assert np.array_equal(arr, x) and attrs["seed"] == 0
    z = x[0, 0] + 1j * x[0, 1]  # a complex 2-D image becomes (1, 2, H, W)
    np.save(tmp_path / "z.npy", z)
    assert torch.allclose(load_array(tmp_path / "z.npy", expected_shape=(2, 16, 16))[0], torch.from_numpy(x[0]))
    np.save(tmp_path / "img.npy", x[0, 0])  # a 2-D real image gets batch and channel axes
    assert load_array(tmp_path / "img.npy", expected_shape=(1, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="expected an array of shape"):
        load_array(tmp_path / "x.npy", expected_shape=(1, 16, 16))
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="finite"):
        load_array(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "missing.npy")
    from PIL import Image

    Image.fromarray((x[0, 0] * 0 + 1 * 255).astype(np.uint8)).save(tmp_path / "w.png")
    assert float(load_array(tmp_path / "w.png", expected_shape=(1, 16, 16)).min()) == 1.0
