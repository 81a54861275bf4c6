"""`invdiff reconstruct`: HDF5 in/out with metadata, simulation from a signal, errors."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from invdiff.cli import main
from invdiff.datasets.loaders import save_hdf5
from invdiff.datasets.phantoms import test_set as held_out


def test_reconstruct_from_signal_and_from_measurement(tmp_path):
    x = held_out("ct-phantom", 1, 64)
    save_hdf5(tmp_path / "x.h5", {"x": x})
    args = ["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"views": 30, "sigma": 0.01}',
            "--sampler", "red-diff", "--prior", "ct-phantom-64", "--steps", "3", "--samples", "2"]
    assert main(args + ["--input", str(tmp_path / "x.h5"), "--output", str(tmp_path / "r.h5")]) == 0
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["samples"].shape == (2, 1, 1, 64, 64) and f["mean"].shape == (1, 1, 64, 64)
        assert f.attrs["operator"] == "ct-sparse-view" and f.attrs["nfe"] == 3 * 1
        assert np.isfinite(f["std"][()]).all()
        y = f["y"][()]
    # a measurement file: the same y gives the same result with the same seed
    save_hdf5(tmp_path / "y.h5", {"y": y})
    assert main(args + ["--input", str(tmp_path / "y.h5"), "--output", str(tmp_path / "r2.h5")]) == 0
    with h5py.File(tmp_path / "r.h5") as a, h5py.File(tmp_path / "r2.h5") as b:
        assert np.array_equal(a["mean"][()], b["mean"][()])


def test_reconstruct_errors(tmp_path, capsys):
    save_hdf5(tmp_path / "z.h5", {"z": np.zeros(3)})
    base = ["reconstruct", "--operator", "mri-4x", "--sampler", "dps", "--prior", "ct-phantom-64", "--output", str(tmp_path / "o.h5")]
    assert main(base + ["--input", str(tmp_path / "missing.h5")]) == 2
    assert main(base + ["--input", str(tmp_path / "z.h5")]) == 2  # channel mismatch: 1-channel prior, complex MRI
    assert "channels" in capsys.readouterr().err
    assert main(base[:6] + ["mri-phantom-64", "--output", str(tmp_path / "o.h5"), "--input", str(tmp_path / "z.h5")]) == 2
    assert "expected a dataset 'y'" in capsys.readouterr().err
    assert main(base + ["--input", str(tmp_path / "z.h5"), "--operator-args", "[1]"]) == 2
