"""HPSM channel datasets on disk: ``invdiff simulate channel --n 10000 --seed 0 --out data/hpsm.nc``.

netCDF (h5netcdf) with dims ``(sample, part, rx, tx)``: ``H[sample, part, rx, tx]`` (part 0 =
real, 1 = imag, float32) and the drawn geometry per sample (``R``, ``psi``, ``beta`` and the
normalisation ``scale``); attributes: ``invdiff_schema = "invdiff-channels-1"``, the preset,
every :class:`~invdiff.datasets.channels.HPSMConfig` field (``config``, JSON), the seed and the
package version. Sample ``i`` is drawn from a generator seeded by ``seed * 2**32 + i``, so a
dataset does not depend on the chunk size and its first ``k`` samples are those of any larger one.

Resumable and atomic like the PDE datasets (:func:`invdiff.datasets.pde.simulate`): finished
chunks stay in ``<out>.partial/`` and are skipped by a rerun with the same arguments (a rerun
with others is refused), and ``out`` appears only once complete.

>>> import tempfile, os, xarray as xr
>>> path = simulate_channels(3, seed=0, out=os.path.join(tempfile.mkdtemp(), "h.nc"), progress=False)
>>> xr.open_dataset(path, engine="h5netcdf")["H"].shape
(3, 2, 16, 16)
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from invdiff.datasets.channels import HPSMConfig, hpsm_channels
from invdiff.utils import atomic_path, progress as _progress

from .resumable import chunk_plan, merge_chunks, open_partial

__all__ = ["simulate_channels", "SCHEMA"]

SCHEMA = "invdiff-channels-1"


def _chunk(cfg: HPSMConfig, seed: int, start: int, end: int, preset: str):
    import xarray as xr

    import invdiff

    Hs, geo = [], {k: [] for k in ("R", "psi", "beta", "scale")}
    for i in range(start, end):
        H, g = hpsm_channels(1, cfg, generator=torch.Generator().manual_seed(seed * 2**32 + i), return_geometry=True)
        Hs.append(H.numpy())
        for k in geo:
            geo[k].append(g[k].numpy())
    data = {"H": (("sample", "part", "rx", "tx"), np.concatenate(Hs))}
    data.update({k: (("sample",), np.concatenate(v)) for k, v in geo.items()})
    return xr.Dataset(
        data,
        coords={"sample": np.arange(start, end), "part": ["real", "imag"]},
        attrs=dict(invdiff_schema=SCHEMA, preset=preset, config=json.dumps(dataclasses.asdict(cfg)), seed=int(seed),
                   package_version=invdiff.__version__, normalisation="||H||_F^2 = Nr Nt per sample",
                   data_card="datasets/channels_hpsm.md"),
    )


def _write(ds, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def simulate_channels(n: int, seed: int, out: str | os.PathLike, preset: str = "60ghz", chunk: int = 1024,
                      progress: bool = True, **overrides) -> Path:
    """Write ``n`` HPSM channels of ``preset`` (with ``overrides`` of :class:`HPSMConfig`) to ``out``."""

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk: expected a positive int, got {chunk!r}")
    cfg = HPSMConfig.preset(preset, **overrides)
    out = Path(out)
    manifest = dict(n=n, seed=int(seed), chunk=chunk, preset=preset, config=dataclasses.asdict(cfg))
    partial = open_partial(out, manifest)
    bounds, files, todo = chunk_plan(partial, n, chunk)
    for (s, e), f in _progress(todo, progress, desc="simulate channel", unit="chunk", total=len(bounds),
                               initial=len(bounds) - len(todo)):
        _write(_chunk(cfg, int(seed), s, e, preset), f)
    merge_chunks(files, out, partial, n, _write)
    return out
