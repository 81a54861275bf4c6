"""``invdiff reconstruct --input-dir DIR``: every input file of a folder, sharded over ``torchrun`` ranks.

The input files (``*.h5``, ``*.hdf5``, ``*.npy``, ``*.npz``, ``*.png``, sorted by name) are
split into contiguous blocks, one per rank (:func:`invdiff.distributed.shard_bounds`); file
``i`` is reconstructed with seed ``seed + i``, so the result does not depend on the number of
ranks. Each rank writes its files' results into a hidden folder beside ``--output``
(``.<output>.shards/``; it must be on a file system all ranks share, as a cluster's work or
scratch space is); after a barrier rank 0 merges them, in file order, into ``--output``:
``mean``/``std``/``y``/``x_true`` concatenated along the batch axis, ``samples`` and
``log_weights`` along their batch axis (1), ``source_index`` (the file of each row) and the
attribute ``files``. Every row of every file appears exactly once.

    torchrun --nproc_per_node 4 -m invdiff reconstruct --input-dir scans/ --output recon.h5 \\
        --operator ct-sparse-view --sampler dps --prior ct-phantom-64
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

SUFFIXES = (".h5", ".hdf5", ".npy", ".npz", ".png")
_BATCH_AXIS = {"mean": 0, "std": 0, "y": 0, "x_true": 0, "samples": 1, "log_weights": 1}


def input_files(folder: str | Path) -> list[Path]:
    """The input files of ``folder`` in name order (hidden files and sub-folders skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--input-dir: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
                   and p.is_file() and not p.is_symlink())
    if not files:
        raise ValueError(f"--input-dir: no input files ({', '.join(SUFFIXES)}) in {folder}")
    return files


def merge(parts: list[Path], files: list[Path], out: Path) -> dict:
    """Concatenate the per-file results ``parts`` (in file order) into ``out``; returns the row counts."""
    import h5py
    import numpy as np

    from invdiff.datasets.loaders import save_hdf5

    arrays: dict[str, list] = {}
    rows, attrs = [], {}
    for i, part in enumerate(parts):
        with h5py.File(part, "r") as f:
            if i == 0:
                attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
            n = f["mean"].shape[0]
            rows.append(n)
            for key, axis in _BATCH_AXIS.items():
                if key in f:
                    arrays.setdefault(key, []).append((i, f[key][()]))
    merged = {}
    for key, items in arrays.items():
        if len(items) != len(parts):  # e.g. x_true for some files only: not merged (rows would not align)
            continue
        try:
            merged[key] = np.concatenate([a for _, a in items], axis=_BATCH_AXIS[key])
        except ValueError:  # shapes differ between files (e.g. y of other sizes): keep the rest
            continue
    merged["source_index"] = np.repeat(np.arange(len(parts)), rows)
    attrs.update(files=json.dumps([p.name for p in files]), rows_per_file=json.dumps(rows),
                 seeds="seed + file index (files in name order)")
    save_hdf5(out, merged, attrs)
    return {"files": len(parts), "rows": int(sum(rows))}


def run_input_dir(args, run_one) -> int:
    """Reconstruct this rank's block of the files of ``args.input_dir`` with ``run_one(args)``, then merge."""
    from invdiff.distributed import barrier, rank_world, shard_bounds

    files = input_files(args.input_dir)
    out = Path(args.output)
    if out.resolve().parent == Path(args.input_dir).resolve():
        raise ValueError(f"--output {out} is inside --input-dir; it would be read as an input next time")
    rank, world = rank_world()
    shards = out.parent / f".{out.name}.shards"
    shards.mkdir(parents=True, exist_ok=True)
    parts = [shards / f"{i:06d}.h5" for i in range(len(files))]
    start, stop = shard_bounds(len(files), rank, world)
    for i in range(start, stop):
        one = copy.copy(args)
        one.input, one.input_dir, one.output = str(files[i]), None, str(parts[i])
        one.seed = (args.seed + i) % 2**63
        one.files_sharded = True  # one file per call: no particle sharding inside
        if str(args.device) == "cuda" and world > 1:  # under torchrun: this rank's GPU
            one.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        run_one(one)
    barrier()
    if rank == 0:
        counts = merge(parts, files, out)
        shutil.rmtree(shards, ignore_errors=True)
        print(f"merged {counts['files']} files ({counts['rows']} rows) from {world} rank(s) into {out}")
    barrier()
    return 0
