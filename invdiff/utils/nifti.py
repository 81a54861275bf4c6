r"""Volume I/O for 3D reconstruction: NIfTI (nibabel), HDF5 or NumPy in; NIfTI or HDF5 out, with the
voxel size and the affine carried from the input to the output.

Axis convention. A NIfTI array is indexed ``data[i, j, k]`` (x, y, z in voxel space); invdiff
volumes are ``(B, C, D, H, W)`` with ``D`` the slice axis. :func:`read_volume` maps
``data[i, j, k] -> x[0, 0, k, j, i]`` (``D = z``, ``H = y``, ``W = x``), so axial slices of the
file are the slices a slice-wise 2D prior sees, and :func:`write_volume` applies the inverse
map. Complex data (MRI) become two channels (real, imag); the output is complex64 NIfTI for
two channels unless ``magnitude=True``. The affine and the voxel size (``zooms``) of the input
are written unchanged, so the output overlays the input in any viewer.

HDF5: a dataset (``dataset=``, default the first one) of shape ``(X, Y, Z)``, with optional
attributes ``affine`` (4 x 4) and ``voxel_size``; NumPy ``.npy``: the array alone (identity
affine). Writes are atomic (:func:`invdiff.utils.io.atomic_path`). nibabel is optional
(``pip install invdiff[nifti]``); only NIfTI paths need it.

>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> np.save(os.path.join(d, "v.npy"), np.zeros((4, 5, 6), np.float32))
>>> x, meta = read_volume(os.path.join(d, "v.npy"))
>>> x.shape, meta["voxel_size"]
(torch.Size([1, 1, 6, 5, 4]), (1.0, 1.0, 1.0))
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from invdiff.utils.io import atomic_path

__all__ = ["read_volume", "write_volume", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
H5_SUFFIXES = (".h5", ".hdf5")


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(H5_SUFFIXES):
        return "hdf5"
    if name.endswith(".npy"):
        return "npy"
    raise ValueError(f"{path}: expected a volume file ending in .nii, .nii.gz, .h5, .hdf5 or .npy")


def _nibabel():
    try:
        import nibabel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("NIfTI files need nibabel: pip install nibabel (or invdiff[nifti])") from e
    return nibabel


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    if a.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got an array of shape {a.shape}")
    a = np.transpose(a, (2, 1, 0))  # (Z, Y, X) = (D, H, W)
    if np.iscomplexobj(a):
        a = np.stack([a.real, a.imag]).astype(np.float32)
    else:
        a = a.astype(np.float32)[None]
    if not np.isfinite(a).all():
        raise ValueError("the volume holds NaN or inf values")
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def read_volume(path: str | os.PathLike, dataset: str | None = None) -> tuple[torch.Tensor, dict]:
    """Read a volume file as ``(1, C, D, H, W)`` float32 (``C = 2`` for complex data) and its
    metadata ``{"affine": (4, 4) array, "voxel_size": (dx, dy, dz), "source": path}``."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    affine, zooms = np.eye(4), (1.0, 1.0, 1.0)
    if kind == "nifti":
        img = _nibabel().load(str(path))
        a = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    elif kind == "hdf5":
        import h5py

        with h5py.File(path, "r") as f:
            name = dataset if dataset is not None else next(iter(f.keys()), None)
            if name is None or name not in f or not isinstance(f[name], h5py.Dataset):
                raise ValueError(f"{path}: no dataset {name!r}; datasets: {list(f.keys())}")
            ds = f[name]
            a = ds[()]
            if "affine" in ds.attrs:
                affine = np.asarray(ds.attrs["affine"], dtype=np.float64).reshape(4, 4)
            if "voxel_size" in ds.attrs:
                zooms = tuple(float(z) for z in ds.attrs["voxel_size"])
    else:
        a = np.load(path, allow_pickle=False)
    return _to_tensor(np.asarray(a)), {"affine": affine, "voxel_size": zooms, "source": str(path)}


def _to_array(x: torch.Tensor, magnitude: bool) -> np.ndarray:
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[0] != 1 or x.shape[1] not in (1, 2):
        raise ValueError(f"x: expected one volume (1, C, D, H, W) with C = 1 or 2, got {tuple(getattr(x, 'shape', ()))}")
    v = x[0].detach().cpu().double().numpy()
    if v.shape[0] == 2:
        v = np.hypot(v[0], v[1]) if magnitude else (v[0] + 1j * v[1])
        v = v.astype(np.float32 if magnitude else np.complex64)
    else:
        v = v[0].astype(np.float32)
    return np.transpose(v, (2, 1, 0))  # back to (X, Y, Z)


def write_volume(path: str | os.PathLike, x: torch.Tensor, meta: dict | None = None, magnitude: bool = False,
                 dataset: str = "x") -> Path:
    """Write the volume ``x`` ``(1, C, D, H, W)`` to ``path`` (NIfTI or HDF5 by its suffix) with the
    affine and voxel size of ``meta`` (from :func:`read_volume`; identity and 1 mm if ``None``).

    >>> import tempfile, os
    >>> p = write_volume(os.path.join(tempfile.mkdtemp(), "r.h5"), torch.ones(1, 1, 2, 3, 4),
    ...                  {"affine": np.diag([2.0, 2.0, 3.0, 1.0]), "voxel_size": (2.0, 2.0, 3.0)})
    >>> read_volume(p)[1]["voxel_size"]
    (2.0, 2.0, 3.0)
    """
    path = Path(path)
    kind = _kind(path)
    if kind == "npy":
        raise ValueError(f"{path}: write NIfTI (.nii, .nii.gz) or HDF5 (.h5); .npy cannot carry the affine")
    meta = meta or {}
    affine = np.asarray(meta.get("affine", np.eye(4)), dtype=np.float64)
    zooms = tuple(float(z) for z in meta.get("voxel_size", (1.0, 1.0, 1.0)))
    a = _to_array(x, magnitude)
    if kind == "nifti":
        nib = _nibabel()
        img = nib.Nifti1Image(a, affine)
        img.header.set_zooms(zooms)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
        with atomic_path(path, suffix=suffix) as tmp:
            nib.save(img, str(tmp))
    else:
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            ds = f.create_dataset(dataset, data=a)
            ds.attrs["affine"] = affine
            ds.attrs["voxel_size"] = np.asarray(zooms)
            if "source" in meta:
                ds.attrs["source"] = str(meta["source"])
    return path
