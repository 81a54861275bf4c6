"""Progress bars that can be silenced (``progress=False``)."""
from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable, enabled: bool = True, **kwargs):
    """Wrap ``iterable`` in a tqdm bar when ``enabled``; otherwise return it unchanged."""
    if not enabled:
        return iterable
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
