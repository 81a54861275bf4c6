"""The resumable, chunked layout shared by the dataset simulators (``invdiff simulate``).

A run writing ``out`` keeps its finished chunks in ``out.partial/`` beside a ``manifest.json``
of its arguments. A rerun with the same arguments resumes (only missing chunks are computed);
with other arguments it is refused while finished chunks exist (the message says how to go on),
and started afresh when nothing was finished.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "data.nc"
>>> partial = open_partial(out, {"n": 4})
>>> [f.name for _, f in chunk_plan(partial, 4, 3)[2]]
['chunk_00000000_00000003.nc', 'chunk_00000003_00000004.nc']
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from invdiff.utils.io import atomic_path, remove_stale_temporaries

__all__ = ["open_partial", "chunk_plan", "merge_chunks"]


def open_partial(out: Path, manifest: dict) -> Path:
    """The ``out.partial`` folder for a run with ``manifest`` (JSON-able), following the policy above."""
    partial = Path(out).with_name(Path(out).name + ".partial")
    manifest = json.loads(json.dumps(manifest))  # tuples -> lists, as read back
    if partial.exists():
        try:
            old = json.loads((partial / "manifest.json").read_text())
        except (OSError, ValueError):
            old = None
        if old == manifest:
            return partial
        if any(partial.glob("chunk_*.nc")):
            raise ValueError(f"{partial} holds an interrupted run with different arguments ({old}); "
                             "rerun with those arguments or delete the folder")
        shutil.rmtree(partial)  # nothing finished: start afresh
    partial.mkdir(parents=True)
    with atomic_path(partial / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, sort_keys=True))
    return partial


def chunk_plan(partial: Path, n: int, chunk: int):
    """``(bounds, files, todo)``: the ``[start, stop)`` of each chunk, its file, and the
    ``((start, stop), file)`` pairs not finished yet."""
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    files = [partial / f"chunk_{s:08d}_{e:08d}.nc" for s, e in bounds]
    todo = [(b, f) for b, f in zip(bounds, files) if not f.exists()]
    return bounds, files, todo


def merge_chunks(files, out: Path, partial: Path, n: int, write) -> Path:
    """Concatenate the finished chunk files along ``sample`` into ``out`` (``write(ds, path)``,
    atomic), then remove ``partial`` and the hidden temporaries of killed earlier runs."""
    import xarray as xr

    parts = [xr.open_dataset(f, engine="h5netcdf") for f in files]
    try:
        ds = xr.concat(parts, dim="sample", data_vars="minimal", coords="minimal", compat="override").load()
    finally:
        for p in parts:
            p.close()
    ds.attrs.update(parts[0].attrs if parts else {}, n_samples=int(n))
    write(ds, out)
    shutil.rmtree(partial)
    remove_stale_temporaries(out)
    return out
