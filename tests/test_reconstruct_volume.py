"""`invdiff reconstruct` on volumes: NIfTI in and out with the affine and voxel size carried through,
HDF5 out, a 2D prior slice by slice (DDS) and DiffusionMBIR; bad shapes exit 2."""
from __future__ import annotations

import numpy as np
import pytest

from invdiff.cli import main

nib = pytest.importorskip("nibabel")


def _phantom(path, affine):
    from invdiff.datasets.phantoms3d import test_volumes

    vol = test_volumes("ct", 1, size=64, depth=4)[0, 0].numpy()  # (D, H, W)
    data = np.transpose(vol, (2, 1, 0)).astype(np.float32)  # NIfTI (x, y, z) = (W, H, D)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return vol


@pytest.mark.parametrize("sampler", ["dds", "diffusion-mbir"])
def test_volume_nifti_roundtrip(sampler, tmp_path, one_thread):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    truth = _phantom(tmp_path / "in.nii.gz", affine)
    out = tmp_path / "out.nii.gz"
    rc = main(["reconstruct", "--operator", "volume-ct", "--operator-args", '{"views": 8, "sigma": 0.01}',
               "--sampler", sampler, "--sampler-args", '{"steps": 4}', "--prior", "ct-phantom-64", "--samples", "1",
               "--input", str(tmp_path / "in.nii.gz"), "--output", str(out)])
    assert rc == 0
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine)
    assert img.header.get_zooms()[:3] == pytest.approx((0.8, 0.8, 2.5))
    mean = np.transpose(np.asanyarray(img.dataobj), (2, 1, 0))
    assert mean.shape == truth.shape and np.isfinite(mean).all()
    assert (tmp_path / "out_std.nii.gz").exists()


def test_volume_hdf5_output_and_shape_errors(tmp_path, capsys, one_thread):
    import json

    import h5py

    _phantom(tmp_path / "in.nii.gz", np.eye(4))
    base = ["reconstruct", "--sampler", "dds", "--sampler-args", '{"steps": 2}', "--samples", "2",
            "--input", str(tmp_path / "in.nii.gz")]
    base += ["--operator-args", '{"sigma": 0.01}']
    assert main(base + ["--operator", "volume-ct", "--prior", "ct-phantom-64", "--output", str(tmp_path / "o.h5")]) == 0
    with h5py.File(tmp_path / "o.h5") as f:
        vs = f.attrs["voxel_size"]
        assert f["samples"].shape == (2, 1, 1, 4, 64, 64)
        assert (json.loads(vs) if isinstance(vs, str) else vs.tolist()) == [1.0, 1.0, 1.0]
    # a 2-channel prior for 1-channel slices: refused before any work
    assert main(base + ["--operator", "volume-ct", "--prior", "mri-phantom-64", "--output", str(tmp_path / "o2.h5")]) == 2
    assert "slices of shape" in capsys.readouterr().err
