r"""Training state on disk without pickle: one ``state.safetensors`` file.

A pickle (``torch.save``/``torch.load(weights_only=False)``) runs code while it loads, so a
crafted ``state.pt`` in a run folder could execute anything on ``--resume``. The state is
stored instead as a safetensors file (a JSON header plus raw tensor bytes, which cannot
execute code): every tensor (raw weights, EMA weights, optimiser moments, RNG states, the loss
history as float64) is a named tensor, and everything else (the step, the optimiser's
hyper-parameters, the training config) is JSON in the file's metadata. Floats round-trip
exactly (float64 tensors and ``repr`` JSON), so resuming stays bit-exact.

>>> import torch, tempfile, os
>>> m = torch.nn.Linear(2, 1); opt = torch.optim.AdamW(m.parameters())
>>> p = os.path.join(tempfile.mkdtemp(), "state.safetensors")
>>> save_state(p, {"model": m.state_dict(), "opt": opt.state_dict(), "step": 3, "losses": [1.0]})
>>> load_state(p)["step"]
3
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from invdiff.utils.io import atomic_path

__all__ = ["save_state", "load_state", "STATE_NAME", "LEGACY_STATE_NAME"]

STATE_NAME = "state.safetensors"
LEGACY_STATE_NAME = "state.pt"
_FORMAT = "invdiff-train-state/1"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nest of dicts/lists by ``{"__tensor__": key}``; collect the tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"state: unsupported key type {type(k).__name__} at {prefix}")
            # JSON keys are strings: remember integer keys (optimiser state is keyed by param index)
            skey = f"{'i:' if isinstance(k, int) else 's:'}{k}"
            out[skey] = _flatten(v, f"{prefix}.{k}", tensors)
        return {"__dict__": out}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"state: cannot store a {type(obj).__name__} at {prefix} without pickle")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if key not in tensors:
                raise ValueError(f"state: tensor {key!r} named in the metadata is missing from the file")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__dict__"}:
            out = {}
            for skey, v in obj["__dict__"].items():
                kind, _, k = skey.partition(":")
                out[int(k) if kind == "i" else k] = _unflatten(v, tensors)
            return out
        raise ValueError(f"state: malformed metadata entry {sorted(obj)[:3]}")
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors, numbers, strings) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "state", tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT, "tree": json.dumps(tree)})


def load_state(path: str | os.PathLike) -> dict:
    """Read a state written by :func:`save_state`; never unpickles.

    Raises ``ValueError`` for a legacy pickle ``state.pt`` (refused: loading it could run code)
    or for a file that is not an invdiff training state.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.name.endswith(".pt") or path.suffix in (".pth", ".pkl", ".pickle"):
        raise ValueError(f"{path}: refusing to load a pickle checkpoint (loading a pickle can execute code); "
                         f"invdiff stores the training state in {STATE_NAME} (safetensors + JSON)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a readable safetensors training state ({exc})") from None
    if meta.get("format") != _FORMAT or "tree" not in meta:
        raise ValueError(f"{path}: not an invdiff training state (format {meta.get('format')!r}, expected {_FORMAT!r})")
    try:
        tree = json.loads(meta["tree"])
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable state metadata ({exc})") from None
    state = _unflatten(tree, tensors)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: state is not a mapping")
    return state
