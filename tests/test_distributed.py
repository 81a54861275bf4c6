"""Past one process (issue 17): particle-sharded SMC resampling and ``reconstruct --input-dir`` on 2 gloo ranks.

References: the single-process run with the same seed (bit-identical on CPU), and the
resampling rule of :mod:`invdiff.samplers.smc.resampling` applied directly.
"""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from invdiff.distributed import all_gather_rows, local_randn, shard_bounds, sharded_resample
from tests.gloo import free_port, gloo_group

N, B, STEPS = 12, 2, 6


def toy_smc(seed: int = 0):
    """A bootstrap filter on a 1-D Gaussian: x <- x + 0.5 eps, log w += -(x - y_b)^2 / (2 * 0.05), resample at ESS < N/2."""
    g = torch.Generator().manual_seed(seed)
    y = torch.tensor([0.8, -1.2], dtype=torch.float64)
    x = local_randn((N * B,), N, B, g, dtype=torch.float64)
    lw = torch.zeros_like(x)
    yb = y.repeat(x.shape[0] // B)
    for _ in range(STEPS):
        x = x + 0.5 * local_randn((N * B,), N, B, g, dtype=torch.float64)
        lw = lw - (x - yb) ** 2 / (2 * 0.05)
        lw, (x,) = sharded_resample(lw, [x], N, B, "systematic", g, ess_threshold=0.5)
    return all_gather_rows(x), all_gather_rows(lw), g.get_state()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from safetensors.torch import save_file

    with gloo_group(rank, world, port):
        x, lw, state = toy_smc()
        s, e = shard_bounds(N, rank, world)
        save_file({"x": x, "lw": lw, "state": state, "local": torch.tensor([s, e])}, os.path.join(out, f"r{rank}.safetensors"))


def test_sharded_resampling_equals_single_process(tmp_path):
    from safetensors.torch import load_file

    ref_x, ref_lw, ref_state = toy_smc()
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for r in range(2):
        got = load_file(str(tmp_path / f"r{r}.safetensors"))
        assert torch.equal(got["x"], ref_x) and torch.equal(got["lw"], ref_lw) and torch.equal(got["state"], ref_state)
    assert tuple(load_file(str(tmp_path / "r1.safetensors"))["local"].tolist()) == (6, 12)


def test_resampling_rule_matches_the_samplers():
    from invdiff.samplers.smc.resampling import ess, resample

    g = torch.Generator().manual_seed(3)
    lw = torch.randn(N * B, generator=g, dtype=torch.float64) * 3
    lw[1::B] = 0.0  # measurement 1 has flat weights (ESS = N): it must keep its particles
    x = torch.arange(N * B, dtype=torch.float64)
    got_lw, (got_x,) = sharded_resample(lw, [x], N, B, "multinomial", torch.Generator().manual_seed(9), 0.5)
    folded = lw.reshape(N, B)
    assert bool(ess(folded)[0] < N / 2) and bool(ess(folded)[1] >= N / 2)
    idx = resample(folded, "multinomial", torch.Generator().manual_seed(9))
    assert torch.equal(got_x.reshape(N, B)[:, 0], x.reshape(N, B)[:, 0][idx[:, 0]])
    assert torch.equal(got_x.reshape(N, B)[:, 1], x.reshape(N, B)[:, 1])
    assert torch.equal(got_lw.reshape(N, B)[:, 0], torch.zeros(N, dtype=torch.float64))
    assert torch.equal(got_lw.reshape(N, B)[:, 1], folded[:, 1])


def test_shard_bounds_partition():
    for n in range(0, 9):
        for world in range(1, 5):
            blocks = [shard_bounds(n, r, world) for r in range(world)]
            assert [i for s, e in blocks for i in range(s, e)] == list(range(n))


def _inputs(tmp_path):
    from invdiff.datasets.loaders import save_hdf5
    from invdiff.datasets.phantoms import test_set

    data = tmp_path / "in"
    data.mkdir()
    x = test_set("ct-phantom", 4, 64)
    save_hdf5(data / "a.h5", {"x": x[:1]})
    save_hdf5(data / "b.h5", {"x": x[1:3]})  # two signals in one file
    np.save(data / "c.npy", x[3].numpy())
    return data, x


def test_reconstruct_input_dir_ranks_in_process(tmp_path, monkeypatch):
    """Two ranks emulated one after the other (rank 1, then rank 0 which merges): same as one process."""
    import invdiff.distributed as dist
    from invdiff.cli import main

    data, x = _inputs(tmp_path)
    args = ["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"views": 8, "sigma": 0.01}', "--sampler", "red-diff",
            "--prior", "ct-phantom-64", "--steps", "1", "--samples", "2", "--input-dir", str(data)]
    assert main(args + ["--output", str(tmp_path / "single.h5")]) == 0
    for rank in (1, 0):
        monkeypatch.setattr(dist, "rank_world", lambda init=True, r=rank: (r, 2))
        assert main(args + ["--output", str(tmp_path / "two.h5")]) == 0
        assert (tmp_path / "two.h5").exists() == (rank == 0)
    with h5py.File(tmp_path / "single.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert b["source_index"][()].tolist() == [0, 1, 1, 2]  # every row once, in file order
        np.testing.assert_array_equal(b["x_true"][()], x.numpy())
        for key in ("mean", "std", "samples", "y", "x_true", "source_index"):
            np.testing.assert_array_equal(a[key][()], b[key][()])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # shard folder removed
    assert main(args + ["--output", str(data / "o.h5")]) == 2  # an output inside the input folder


@pytest.mark.slow
def test_reconstruct_input_dir_two_ranks(tmp_path):
    from invdiff.cli import main

    data, x = _inputs(tmp_path)
    args = ["reconstruct", "--operator", "ct-sparse-view", "--operator-args", '{"views": 8, "sigma": 0.01}', "--sampler", "red-diff",
            "--prior", "ct-phantom-64", "--steps", "1", "--samples", "2", "--input-dir", str(data)]
    assert main(args + ["--output", str(tmp_path / "single.h5")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "invdiff"] + args + ["--output", str(tmp_path / "two.h5")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(tmp_path / "single.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert b["source_index"][()].tolist() == [0, 1, 1, 2]  # every row once, in file order
        assert b["samples"].shape == (2, 4, 1, 64, 64)
        np.testing.assert_array_equal(b["x_true"][()], x.numpy())
        for key in ("mean", "std", "samples", "y", "x_true", "source_index"):
            np.testing.assert_array_equal(a[key][()], b[key][()])
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # shard folder removed
