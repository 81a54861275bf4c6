"""Read user data (HDF5, NumPy, PNG) into ``(B, C, H, W)`` float tensors, with checks.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.npy"); np.save(path, np.zeros((2, 1, 8, 8)))
>>> load_array(path, expected_shape=(1, 8, 8)).shape
torch.Size([2, 1, 8, 8])
"""
from __future__ import annotations

import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from invdiff.operators.complex import to_channels_np
from invdiff.utils.checks import check_finite

__all__ = ["load_array", "save_hdf5", "load_hdf5", "hdf5_keys", "read_npy", "read_npz", "read_png", "UnreadableFileError",
           "MAX_ELEMENTS", "MAX_PIXELS"]


# Limits that protect against files whose header claims far more than they hold (a .npy header
# claiming 149 TiB, a PNG "bomb"): checked from the header, before anything is allocated.
MAX_ELEMENTS = 2**28  # 268M values (1 GiB as float32)
MAX_PIXELS = 2**26  # 64M pixels per image


class UnreadableFileError(ValueError):
    """A file that is empty, truncated, corrupt, too large for its claimed content, or unsafe."""


def _check_size(path, shape: tuple[int, ...], what: str = "array") -> int:
    n = 1
    for s in shape:
        n *= int(s)
    if n == 0:
        raise UnreadableFileError(f"{path}: the {what} is empty (shape {tuple(shape)}); expected at least one value")
    if n > MAX_ELEMENTS:
        raise UnreadableFileError(f"{path}: the {what} claims shape {tuple(shape)} ({n} values), more than the "
                                  f"limit of {MAX_ELEMENTS} (datasets.loaders.MAX_ELEMENTS)")
    return n


def _check_regular(path) -> None:
    """Inputs must be regular files: reading a FIFO would block, a device could be endless."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        raise UnreadableFileError(f"{path}: not a regular file")


def _read_npy_stream(f, available: int, path) -> np.ndarray:
    """Read one .npy stream, checking the header against the bytes really present (never unpickles)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise UnreadableFileError(f"{path}: unsupported .npy format version {version}")
        header_end = f.tell()
    except UnreadableFileError:
        raise
    except (ValueError, EOFError, OSError, SyntaxError, TypeError, tokenize.TokenError) as exc:  # numpy re-tokenises a bad header
        raise UnreadableFileError(f"{path}: not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise UnreadableFileError(f"{path}: holds Python objects (dtype {dtype}); refused, loading them would need pickle")
    n = _check_size(path, shape)
    if available - header_end < n * dtype.itemsize:
        raise UnreadableFileError(f"{path}: truncated: the header claims shape {tuple(shape)} of {dtype} "
                                  f"({n * dtype.itemsize} bytes), the file holds {max(available - header_end, 0)}")
    try:
        f.seek(0)
        return fmt.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise UnreadableFileError(f"{path}: corrupt .npy data ({exc})") from None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` array; its header (shape, dtype) is checked against the file size before reading."""
    path = Path(path)
    _check_regular(path)
    with open(path, "rb") as f:
        return _read_npy_stream(f, os.fstat(f.fileno()).st_size, path)


def read_npz(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Array ``key`` (default: the first) of a ``.npz``, with the same checks as :func:`read_npy`."""
    path = Path(path)
    _check_regular(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".npy")]
            if not names:
                raise UnreadableFileError(f"{path}: no arrays in the .npz file")
            name = names[0] if key is None else f"{key}.npy"
            if name not in names:
                raise UnreadableFileError(f"{path}: no array {key!r}; have {[n[:-4] for n in names]}")
            info = z.getinfo(name)
            with z.open(info) as f:
                return _read_npy_stream(f, info.file_size, f"{path}[{name[:-4]}]")
    except UnreadableFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise UnreadableFileError(f"{path}: not a readable .npz file ({exc})") from None


def read_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG as float32 ``(C, H, W)`` in [0, 1]; the pixel count is checked before decoding (bombs)."""
    from PIL import Image

    path = Path(path)
    _check_regular(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PIXELS or w * h == 0:
                raise UnreadableFileError(f"{path}: image of {w} x {h} pixels; expected 1 to {MAX_PIXELS} "
                                          "(datasets.loaders.MAX_PIXELS; a decompression bomb?)")
            if img.mode in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else ("L" if img.mode == "1" else "RGB"))
            arr = np.asarray(img)
    except UnreadableFileError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError, zlib.error, struct.error) as exc:
        raise UnreadableFileError(f"{path}: not a readable PNG image ({type(exc).__name__}: {exc})") from None
    scale = 1.0 if arr.dtype == bool else 255.0 if arr.dtype == np.uint8 else 65535.0
    a = arr.astype(np.float32) / scale
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def _complex_to_channels(a: np.ndarray, expected_shape: Sequence[int] | None) -> np.ndarray:
    """Complex data -> (real, imag) channels: ``(..., 1, H, W)`` -> ``(..., 2, H, W)``, ``(H, W)`` -> ``(2, H, W)``."""
    want_c = None if expected_shape is None or len(expected_shape) < 2 else int(expected_shape[0])
    if a.ndim >= 3 and a.shape[-3] == 1 and want_c == 2:  # one complex channel
        return to_channels_np(a[..., 0, :, :], axis=-3)
    if want_c is not None and want_c != 2:
        raise TypeError(f"complex data of shape {a.shape}: the operator expects {want_c} real channel(s) {tuple(expected_shape)}, "
                        "not (real, imag); refusing to drop the imaginary part")
    return to_channels_np(a, axis=-3 if a.ndim >= 2 else 0)


def _to_batch(a: np.ndarray, expected_shape: Sequence[int] | None) -> torch.Tensor:
    if not isinstance(a, np.ndarray) or a.dtype.hasobject:
        raise TypeError(f"expected a numeric array, got {type(a).__name__} of dtype {getattr(a, 'dtype', None)}")
    if a.size == 0:
        raise ValueError(f"expected a non-empty array, got shape {a.shape}")
    if np.iscomplexobj(a):  # complex -> (real, imag) channels, never silently real
        a = _complex_to_channels(a, expected_shape)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise TypeError(f"expected a numeric array, got dtype {a.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused just below
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
    channels (real, imag), or are refused when the operator expects real data). PNG images are
    scaled to [0, 1]. Never unpickles; sizes claimed by headers are checked before allocating.
    Raises ``FileNotFoundError`` if missing, ``ValueError`` on a shape mismatch, NaN/inf, an
    empty, truncated or corrupt file, ``TypeError`` on non-numeric data.
    """
    path = Path(path)
    _check_regular(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        a = read_npy(path)
    elif suffix == ".npz":
        a = read_npz(path, key)
    elif suffix in (".h5", ".hdf5"):
        a, _ = load_hdf5(path, key)
    elif suffix == ".png":
        a = read_png(path)
    else:
        raise ValueError(f"unsupported file type {suffix!r}; expected .npy, .npz, .h5, .hdf5 or .png")
    try:
        return _to_batch(a, expected_shape)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{path}: {exc}") from None


def hdf5_keys(path: str | os.PathLike) -> list[str]:
    """Names of the top-level datasets of an HDF5 file (``ValueError`` if it is not readable HDF5)."""
    import h5py

    _check_regular(path)
    try:
        with h5py.File(path, "r") as f:
            return [k for k in f.keys() if isinstance(f.get(k), h5py.Dataset)]
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise UnreadableFileError(f"{path}: not a readable HDF5 file ({exc})") from None


def load_hdf5(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, dict]:
    """``(array, attributes)`` of dataset ``key`` (default: the first dataset) of an HDF5 file.

    The dataset's dtype and size are checked before it is read; an empty, truncated or corrupt
    file raises ``ValueError`` naming the file.
    """
    import h5py

    _check_regular(path)
    try:
        with h5py.File(path, "r") as f:
            if key is None:
                names = [k for k in f.keys() if isinstance(f.get(k), h5py.Dataset)]
                if not names:
                    raise UnreadableFileError(f"{path}: no dataset at the top level")
                key = names[0]
            if key not in f or not isinstance(f.get(key), h5py.Dataset):
                raise UnreadableFileError(f"{path}: no dataset {key!r}; have {list(f.keys())}")
            ds = f[key]
            if ds.shape is None:
                raise UnreadableFileError(f"{path}[{key}]: empty dataset (no dataspace)")
            if ds.dtype.kind not in "biufc":
                raise TypeError(f"{path}[{key}]: expected numeric data, got dtype {ds.dtype}")
            _check_size(path, ds.shape, f"dataset {key!r}")
            attrs = dict(ds.attrs) | dict(f.attrs)
            return ds[()], attrs
    except (UnreadableFileError, TypeError):
        raise
    except (OSError, RuntimeError, KeyError, ValueError, EOFError) as exc:
        raise UnreadableFileError(f"{path}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from None


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
