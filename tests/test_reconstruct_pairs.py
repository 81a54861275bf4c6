"""`invdiff reconstruct` over every registered operator and sampler pair: it runs (tiny settings)
or exits 2 with a one-line message naming the problem, never a traceback.

Each operator gets the shipped prior of its modality where one fits (``ct-*`` and 1-channel 64 x 64
signals: ``ct-phantom-64``; ``mri-4x``: ``mri-phantom-64``); every other operator is paired with
``ct-phantom-64`` and must be refused for the shape mismatch (exit 2) before any work.
"""
from __future__ import annotations

import numpy as np
import pytest

import invdiff.operators as operators
import invdiff.samplers as samplers
from invdiff.cli import main
from invdiff.datasets.loaders import save_hdf5

PRIOR_FOR = {"ct-sparse-view": "ct-phantom-64", "ct-limited-angle": "ct-phantom-64", "ct-fan": "ct-phantom-64",
             "mri-4x": "mri-phantom-64"}
TINY = {"steps": 2}


def _op_args(name):
    return '{"size": 64}' if name in PRIOR_FOR else "{}"


def _pairs():
    """Every pair; the default run keeps every sampler on the two demo operators and every
    operator with DPS, the full matrix is marked slow (about 5 minutes on a loaded 2-core machine)."""
    out = []
    for op in sorted(operators.available()):
        for smp in sorted(samplers.available()):
            fast = op in ("ct-sparse-view", "mri-4x") or smp == "dps"
            out.append(pytest.param(op, smp, marks=() if fast else pytest.mark.slow))
    return out


@pytest.mark.parametrize(("operator", "sampler"), _pairs())
def test_reconstruct_pair_runs_or_exits_2(operator, sampler, tmp_path, capsys, one_thread):
    prior = PRIOR_FOR.get(operator, "ct-phantom-64")
    shape = (1, 64, 64) if prior == "ct-phantom-64" else (2, 64, 64)
    x = np.full((1, *shape), 0.2, dtype=np.float32)
    save_hdf5(tmp_path / "x.h5", {"x": x})
    settings = '{"steps": 2}' if sampler not in ("smc", "smc-adaptive", "twisted-smc") else '{"steps": 2, "sigma_max": 10.0}'
    rc = main(["reconstruct", "--operator", operator, "--operator-args", _op_args(operator), "--sampler", sampler,
               "--sampler-args", settings, "--prior", prior, "--samples", "2", "--input", str(tmp_path / "x.h5"),
               "--output", str(tmp_path / "out.h5")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc in (0, 2), err
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert len(lines) == 1 and lines[0].startswith("invdiff reconstruct: error: "), err
    if operator not in PRIOR_FOR:
        assert rc == 2  # a prior of another shape is refused
