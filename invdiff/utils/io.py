"""Atomic file writing: an interrupted run never leaves a half-written file under its final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
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
