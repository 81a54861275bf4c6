"""The resumable chunk layout of the simulators: resume with the same arguments, refuse other
arguments while finished chunks exist, start afresh when nothing was finished."""
from __future__ import annotations

import doctest

import pytest

import invdiff.datasets.resumable as resumable
from invdiff.datasets.resumable import chunk_plan, open_partial


def test_resume_refuse_restart(tmp_path):
    out = tmp_path / "d.nc"
    partial = open_partial(out, {"n": 5, "seed": 1})
    bounds, files, todo = chunk_plan(partial, 5, 2)
    assert bounds == [(0, 2), (2, 4), (4, 5)] and len(todo) == 3
    files[0].write_bytes(b"done")
    assert open_partial(out, {"n": 5, "seed": 1}) == partial  # same arguments: resume
    assert [b for b, _ in chunk_plan(partial, 5, 2)[2]] == [(2, 4), (4, 5)]
    with pytest.raises(ValueError, match="different arguments"):
        open_partial(out, {"n": 5, "seed": 2})
    files[0].unlink()  # nothing finished: other arguments start afresh
    assert open_partial(out, {"n": 5, "seed": 2}) == partial
    assert len(chunk_plan(partial, 5, 2)[2]) == 3


def test_docstring_example():
    assert doctest.testmod(resumable).failed == 0
