"""Property tests (hypothesis) of the command line, in-process through ``invdiff.cli.main``.

Cases come from :mod:`tests.fuzz_cli_cases` (good and bad values of every flag, broken and
hostile input files, outputs that are inputs, symlinks, FIFOs, device nodes, unwritable places).
The properties: exit code 0 or 2 (2 for inputs that can only give a meaningless result), no traceback, a one-line ``invdiff CMD: error: ...``
message on failure, every input file unchanged, nothing but the named output replaced, and
no pickle ever executed. ``python tests/fuzz_cli_cases.py N`` counts outcomes over N cases.
"""
from __future__ import annotations

import os

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_cli_cases import make_case, make_world, run_case  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def _check(data, world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("case")
    argv = make_case(lambda options: data.draw(st.sampled_from(options)), world, tmp)
    outcome, detail = run_case(argv, world)
    assert outcome in ("ok", "user-error"), f"{outcome}: {detail}\n  invdiff {' '.join(argv)}"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not os.environ.get("HYPOTHESIS_RANDOM"))
@given(data=st.data())
def test_cli_fuzz(world, tmp_path_factory, data):
    _check(data, world, tmp_path_factory)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not os.environ.get("HYPOTHESIS_RANDOM"))
@given(data=st.data())
def test_cli_fuzz_long(world, tmp_path_factory, data):
    _check(data, world, tmp_path_factory)


@pytest.mark.parametrize("argv,needle", [
    (["reconstruct", "--operator", "ct-sparse-view", "--sampler", "dps", "--prior", "ct-phantom-64", "--sampler-args", '{"zeta": Infinity}'], "zeta: expected a finite"),
    (["simulate", "heat", "--n", "1", "--t-final", "inf"], "--t-final: expected a finite"),
    (["train", "--config", "c.json", "--device", "foo"], "--device"),
    (["demo", "--device", "cuda"] if not torch.cuda.is_available() else ["demo", "--device", "foo"], "--device"),
    (["demo", "--threads", "-1"], "--threads"),
])
def test_bad_flags_fail_before_work(tmp_path, capsys, argv, needle):
    from invdiff.cli import main

    out = ["--output", str(tmp_path / "o.h5"), "--input", str(tmp_path / "x.h5")] if argv[0] == "reconstruct" else \
        ["--out", str(tmp_path / "o.nc")] if argv[0] == "simulate" else []
    assert main(argv + out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"invdiff {argv[0]}: error:") and needle in err and err.count("\n") == 1


def test_reconstruct_refuses_output_equal_input(tmp_path, capsys):
    from invdiff.cli import main

    world = make_world(tmp_path / "world")  # its own: the fuzz cases may legitimately overwrite the shared one

    before = world["x.h5"].read_bytes()
    for out in (world["x.h5"], world["hard.h5"]):
        rc = main(["reconstruct", "--operator", "ct-sparse-view", "--sampler", "red-diff", "--prior", "ct-phantom-64",
                   "--steps", "1", "--samples", "1", "--input", str(world["x.h5"]), "--output", str(out), "--overwrite"])
        assert rc == 2 and "is the input" in capsys.readouterr().err
    assert world["x.h5"].read_bytes() == before


def test_reconstruct_refuses_broadcastable_y(world, capsys, tmp_path):
    from invdiff.cli import main

    rc = main(["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"views": 8}', "--sampler", "dps",
               "--prior", "ct-phantom-64", "--steps", "1", "--samples", "1", "--input", str(world["y_bcast.h5"]),
               "--output", str(tmp_path / "o.h5")])
    assert rc == 2 and "shape (1, 91, 8)" in capsys.readouterr().err
    assert not (tmp_path / "o.h5").exists()


def test_simulate_failed_run_does_not_block_rerun(tmp_path):
    from invdiff.cli import main

    out = tmp_path / "h.nc"
    bad = ["simulate", "heat", "--n", "2", "--chunk", "1", "--resolution", "8", "--frames", "3", "--out", str(out), "--no-progress"]
    # a failure inside the run (nothing finished) leaves no .partial that would block a corrected rerun
    import invdiff.datasets.pde as pde

    real = pde.generate
    pde.generate = lambda *a, **k: (_ for _ in ()).throw(FloatingPointError("solver blew up"))
    try:
        assert main(bad + ["--t-final", "0.5"]) == 2
    finally:
        pde.generate = real
    assert not (tmp_path / "h.nc.partial").exists()
    stale = tmp_path / ".h.nc.k1ll3d.tmp.nc"  # left by a killed run
    stale.write_bytes(b"half")
    assert main(bad + ["--t-final", "0.25"]) == 0  # different arguments: runs
    assert out.exists() and not stale.exists() and not (tmp_path / "h.nc.partial").exists()


def test_safetensors_prior_gets_the_shape_check(tmp_path, capsys):
    import shutil

    import invdiff
    from invdiff.cli import main
    from invdiff.diffusion.zoo import ASSETS

    prior = tmp_path / "model.safetensors"
    shutil.copy(ASSETS / "ct-phantom-64.safetensors", prior)
    base = ["reconstruct", "--sampler", "dps", "--prior", str(prior), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.h5")]
    assert main(base + ["--operator", "ct-sparse-view", "--operator-args", '{"size": 32}']) == 2
    assert "(1, 64, 64)" in capsys.readouterr().err  # a 64^2 prior on a 32^2 operator: refused, not run
    assert main(base + ["--operator", "mri-4x"]) == 2
    assert "channels" in capsys.readouterr().err
    assert invdiff.__version__  # (the shipped name path is covered by tests/test_reconstruct.py)


def test_complex_measurement_keeps_its_imaginary_part(world, tmp_path):
    import h5py
    import numpy as np

    from invdiff.cli import main

    rc = main(["reconstruct", "--operator", "mri-4x", "--operator-args", '{"sigma": 0.01}', "--sampler", "red-diff",
               "--prior", "mri-phantom-64", "--steps", "1", "--samples", "1", "--input", str(world["y_complex.h5"]),
               "--output", str(tmp_path / "o.h5")])
    assert rc == 0
    with h5py.File(tmp_path / "o.h5") as f:
        y = f["y"][()]
    assert y.shape == (1, 2, 64, 64)
    np.testing.assert_array_equal(y[:, 0], np.ones((1, 64, 64)))  # real part
    np.testing.assert_array_equal(y[:, 1], np.ones((1, 64, 64)))  # imaginary part, kept as channel 2


def test_unnormalised_measurement_warns(tmp_path, capsys):
    import warnings

    import invdiff.operators as operators
    from invdiff.cli import main
    from invdiff.datasets.loaders import save_hdf5
    from invdiff.datasets.phantoms import test_set
    from invdiff.utils.validate import OutOfRangeWarning

    physics = operators.make("ct-sparse-view", views=8, sigma=0.01)
    x = test_set("ct-phantom", 1, 64)
    base = ["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"views": 8, "sigma": 0.01}', "--sampler", "red-diff",
            "--prior", "ct-phantom-64", "--steps", "1", "--samples", "1"]
    for scale, warned in ((1.0, False), (255.0, True)):  # an image in 0..255 given to a prior trained on [0, 1]
        save_hdf5(tmp_path / "y.h5", {"y": physics(scale * x)})
        with warnings.catch_warnings():
            warnings.simplefilter("always", OutOfRangeWarning)
            assert main(base + ["--input", str(tmp_path / "y.h5"), "--output", str(tmp_path / "o.h5")]) == 0
        err = capsys.readouterr().err
        assert ("invdiff reconstruct: warning:" in err and "0..255" in err) == warned, err
