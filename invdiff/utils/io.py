"""Atomic file writing (an interrupted run never leaves a half-written file under its final name)
and output-path checks (:func:`check_output_path`: never clobber an input, a device node, a
symlink or a file of another kind), run before any computation."""
from __future__ import annotations

import contextlib
import os
import tempfile
from glob import escape as glob_escape
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` (if it existed) is untouched.

    >>> import numpy as np
    >>> with atomic_path("/tmp/_invdiff_example.npy") as tmp:   # doctest: +SKIP
    ...     np.save(tmp, np.zeros(3))
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"{path}: exists and is not a regular file (a symlink, folder or device); refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file with mode 0600; give the final file the usual umask mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Magic numbers of the formats invdiff writes; an existing file of another kind is only
# replaced with ``overwrite=True``.
_MAGIC = {
    ".h5": (b"\x89HDF\r\n\x1a\n",), ".hdf5": (b"\x89HDF\r\n\x1a\n",),
    ".nc": (b"\x89HDF\r\n\x1a\n", b"CDF\x01", b"CDF\x02"),
    ".npy": (b"\x93NUMPY",), ".npz": (b"PK\x03\x04", b"PK\x05\x06"), ".png": (b"\x89PNG\r\n\x1a\n",),
    ".safetensors": None, ".json": None, ".md": None, ".csv": None,
}


def _same_kind(path: Path) -> bool:
    magic = _MAGIC.get(path.suffix.lower(), ())
    if magic is None:  # text-like formats: any regular file of that suffix
        return True
    if not magic:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in magic)


def _check_dir_writable(d: Path, what: str) -> None:
    """Create ``d`` if needed and prove that a file can be created in it (also as root on a read-only mount)."""
    try:
        d.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot create the folder {d} ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    if not d.is_dir():
        raise ValueError(f"{what}: {d} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".invdiff-write-test.", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in {d} ({exc.strerror or exc})") from None


def check_output_path(path: str | os.PathLike, inputs=(), overwrite: bool = False, what: str = "--output") -> Path:
    """Check, before any work, that ``path`` may be written as an output file; return it as a Path.

    Refused (``ValueError`` naming the reason): a symlink (even to a regular file), anything
    that is not a regular file (a folder, a device node such as ``/dev/null``, a FIFO, a socket),
    one of ``inputs`` (the same inode, whatever the spelling), and without ``overwrite`` an
    existing file of another kind than the suffix says (e.g. a PNG at ``out.h5``). The folder is
    created if needed and must be writable.

    >>> check_output_path("/tmp/_invdiff_out.h5").name           # doctest: +SKIP
    '_invdiff_out.h5'
    """
    import stat

    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{what}: expected a file name, got {str(path)!r}")
    if path.is_symlink():
        raise ValueError(f"{what}: {path} is a symbolic link; refusing to replace it (give the real path)")
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ValueError(f"{what}: cannot inspect {path} ({exc.strerror or exc})") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) \
                else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file"
            raise ValueError(f"{what}: {path} is {kind}; expected a regular file path")
        for inp in inputs:
            if inp is None:
                continue
            try:
                if os.path.samefile(path, inp):
                    raise ValueError(f"{what}: {path} is the input file {inp}; choose another output")
            except OSError:
                continue
        if not overwrite and not _same_kind(path):
            raise ValueError(f"{what}: {path} exists and is not a {path.suffix or 'known'} file; "
                             "pass --overwrite to replace it")
    _check_dir_writable(path.parent if str(path.parent) else Path("."), what)
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary files that :func:`atomic_path` left beside ``path`` when a
    process was killed (``.<name>.*.tmp*``); call it after ``path`` was written successfully by
    the only writer of that name. Returns the removed paths."""
    path = Path(path)
    removed = []
    for p in path.parent.glob(f".{glob_escape(path.name)}.*.tmp*"):
        if p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that ``path`` is (or can be created as) a writable real folder; return it as a Path."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{what}: {path} is a symbolic link; refusing to write through it (give the real path)")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what}: {path} exists and is not a folder")
    _check_dir_writable(path, what)
    return path
