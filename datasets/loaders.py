"""Read user data (HDF5, NumPy, PNG) into ``(B, C, H, W)`` float tensors, with checks.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(path, np.zeros((2, 1, 8, 8)))
>>> load_array(path, expected_shape=(1, 8, 8)).shape
torch.Size([2, 1, 8, 8])
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from invdiff.utils.checks import check_finite

__all__ = ["load_array", "save_hdf5", "load_hdf5"]


def _to_batch(a: np.ndarray, expected_shape: Sequence[int] | None) -> torch.Tensor:
    if np.iscomplexobj(a):  # complex -> (real, imag) channels
        a = np.stack([a.real, a.imag], axis=-3 if a.ndim >= 2 else 0)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise TypeError(f"expected a numeric array, got dtype {a.dtype}")
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    if expected_shape is not None:
        exp = tuple(expected_shape)
        if tuple(t.shape) == exp:
            t = t[None]
        elif t.ndim == len(exp) - 1 and exp[0] == 1 and tuple(t.shape) == exp[1:]:
            t = t[None, None]
        if tuple(t.shape[1:]) != exp:
            raise ValueError(f"expected an array of shape {exp} or (B, *{exp}), got {tuple(a.shape)}")
    check_finite("input", t)
    return t


def load_array(path: str | os.PathLike, key: str | None = None, expected_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Load ``.npy``, ``.npz``, ``.h5``/``.hdf5`` (dataset ``key``, default the first) or ``.png``.

    Returns float32 ``(B, *expected_shape)`` (a single signal gets a batch axis; a 2-D image
    gets a channel axis when ``expected_shape`` has one channel; complex arrays become two
    channels). PNG images are scaled to [0, 1]. Raises ``ValueError`` on a shape mismatch or
    NaN/inf, ``FileNotFoundError`` if missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        a = np.load(path)
    elif suffix == ".npz":
        with np.load(path) as z:
            a = z[key or z.files[0]]
    elif suffix in (".h5", ".hdf5"):
        a, _ = load_hdf5(path, key)
    elif suffix == ".png":
        from PIL import Image

        img = np.asarray(Image.open(path))
        scale = 65535.0 if img.dtype == np.uint16 else 255.0
        a = img.astype(np.float32) / scale
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    else:
        raise ValueError(f"unsupported file type {suffix!r}; expected .npy, .npz, .h5, .hdf5 or .png")
    return _to_batch(a, expected_shape)


def load_hdf5(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, dict]:
    """``(array, attributes)`` of dataset ``key`` (default: the first dataset) of an HDF5 file."""
    import h5py

    with h5py.File(path, "r") as f:
        if key is None:
            names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            if not names:
                raise ValueError(f"{path}: no dataset at the top level")
            key = names[0]
        if key not in f:
            raise ValueError(f"{path}: no dataset {key!r}; have {list(f.keys())}")
        return f[key][()], dict(f[key].attrs) | dict(f.attrs)


def save_hdf5(path: str | os.PathLike, arrays: dict[str, np.ndarray | torch.Tensor], attrs: dict | None = None) -> None:
    """Write ``arrays`` as datasets and ``attrs`` (JSON-able values) as file attributes, atomically."""
    import json

    import h5py

    from invdiff.utils.io import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v), compression="gzip")
            for k, v in (attrs or {}).items():
                f.attrs[k] = v if isinstance(v, (int, float, str, np.ndarray)) else json.dumps(v)
