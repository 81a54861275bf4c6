"""Volume I/O (invdiff.utils.nifti): axis map, complex channels, affine and voxel size carried through."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from invdiff.utils.nifti import read_volume, write_volume


def test_npy_axis_map(tmp_path):
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (X, Y, Z)
    np.save(tmp_path / "v.npy", a)
    x, meta = read_volume(tmp_path / "v.npy")
    assert x.shape == (1, 1, 6, 5, 4) and x.dtype == torch.float32
    assert float(x[0, 0, 3, 2, 1]) == a[1, 2, 3]  # data[i, j, k] -> x[0, 0, k, j, i]
    assert np.array_equal(meta["affine"], np.eye(4))


def test_hdf5_roundtrip_keeps_affine_and_complex(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((4, 5, 6)) + 1j * rng.standard_normal((4, 5, 6))).astype(np.complex64)
    np.save(tmp_path / "c.npy", a)
    x, meta = read_volume(tmp_path / "c.npy")
    assert x.shape == (1, 2, 6, 5, 4)
    meta = {**meta, "affine": np.diag([0.5, 0.5, 2.0, 1.0]), "voxel_size": (0.5, 0.5, 2.0)}
    write_volume(tmp_path / "c.h5", x, meta)
    x2, meta2 = read_volume(tmp_path / "c.h5")
    assert torch.equal(x, x2) and meta2["voxel_size"] == (0.5, 0.5, 2.0)
    assert np.array_equal(meta2["affine"], meta["affine"])
    write_volume(tmp_path / "m.h5", x, meta, magnitude=True)
    m, _ = read_volume(tmp_path / "m.h5")
    assert torch.allclose(m[0, 0], x[0].pow(2).sum(0).sqrt(), atol=1e-6)


def test_nifti_roundtrip_carries_affine_and_zooms(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.array([[0.9, 0, 0, -30.0], [0, 0.9, 0, -40.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])
    a = np.random.default_rng(1).random((6, 7, 5)).astype(np.float32)
    img = nib.Nifti1Image(a, affine)
    img.header.set_zooms((0.9, 0.9, 2.5))
    nib.save(img, str(tmp_path / "in.nii.gz"))
    x, meta = read_volume(tmp_path / "in.nii.gz")
    assert x.shape == (1, 1, 5, 7, 6) and meta["voxel_size"] == pytest.approx((0.9, 0.9, 2.5))
    write_volume(tmp_path / "out.nii.gz", 2 * x, meta)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    assert np.allclose(out.affine, affine) and np.allclose(out.header.get_zooms(), (0.9, 0.9, 2.5))
    assert np.allclose(np.asanyarray(out.dataobj), 2 * a)


def test_bad_paths_and_shapes(tmp_path):
    with pytest.raises(ValueError, match="expected a volume file"):
        read_volume(tmp_path / "v.png")
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="3D volume"):
        read_volume(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match="affine"):
        write_volume(tmp_path / "o.npy", torch.zeros(1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match="one volume"):
        write_volume(tmp_path / "o.h5", torch.zeros(2, 1, 2, 2, 2))
