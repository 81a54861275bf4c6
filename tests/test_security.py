"""Issue 17, robustness: no code execution from files, no clobbered outputs, validated resume.

The malicious files are real pickles whose ``__reduce__`` would create a marker file; the tests
assert the marker never appears (so the pickle was never executed) and the error is a clear one.
"""
from __future__ import annotations

import json
import os
import pickle
import stat
import warnings

import pytest
import torch

from invdiff.cli import main
from invdiff.diffusion.state import load_state, save_state
from invdiff.diffusion.training import TrainConfig, train
from invdiff.utils.io import atomic_path, check_output_dir, check_output_path, remove_stale_temporaries


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # executed by any unpickler that loads this object
        return (open, (self.marker, "w"))


def tiny_config(**kw) -> dict:
    cfg = {"name": "tiny", "network": {"name": "mlp", "dim": 2, "hidden": 16, "depth": 2},
           "data": {"generator": "gaussian", "params": {"dim": 2}}, "batch_size": 8, "steps": 4,
           "warmup": 1, "checkpoint_every": 2, "seed": 1}
    cfg.update(kw)
    return cfg


def _evil_bytes(marker) -> bytes:
    return pickle.dumps({"step": 0, "model": _Evil(marker)})


def test_pickle_itself_would_execute(tmp_path):
    # the crafted payload is live: a plain unpickler runs it (so the tests below can fail)
    marker = tmp_path / "pwned"
    pickle.loads(_evil_bytes(marker)).__class__  # noqa: B018
    assert marker.exists()


@pytest.mark.parametrize("name", ["state.pt", "state.safetensors"])
def test_resume_refuses_malicious_pickle(tmp_path, name, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    (run / name).write_bytes(_evil_bytes(marker))
    with pytest.raises(ValueError, match="pickle|safetensors"):
        train(tiny_config(), run, resume=True, progress=False)
    assert not marker.exists()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_config()))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invdiff train: error:") and "Traceback" not in err and err.count("\n") == 1
    assert not marker.exists()


def test_state_round_trip_exact(tmp_path):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.8, 0.9))
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    g = torch.Generator().manual_seed(7)
    state = {"step": 5, "opt": opt.state_dict(), "model": m.state_dict(), "rng": g.get_state(), "cuda": None,
             "losses": torch.tensor([0.1, 1 / 3], dtype=torch.float64), "x": [1, 2.5, "a", (1, 2)]}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 5 and back["cuda"] is None and back["x"] == [1, 2.5, "a", (1, 2)]
    assert back["opt"]["param_groups"][0]["betas"] == (0.8, 0.9)
    assert set(back["opt"]["state"]) == {0, 1}
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(back["opt"]["state"][0][k], v)
    assert torch.equal(back["rng"], g.get_state()) and back["losses"].tolist() == [0.1, 1 / 3]


def test_resume_refuses_other_config_and_fewer_steps(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False, stop_after=2)
    for change, word in ((dict(lr=0.01), "lr"), (dict(batch_size=4), "batch_size"), (dict(seed=2), "seed"),
                         (dict(network={"name": "mlp", "dim": 2, "hidden": 8, "depth": 2}), "network")):
        with pytest.raises(ValueError, match=f"config differs.*{word}: checkpoint"):
            train(tiny_config(**change), tmp_path / "run", resume=True, progress=False)
    with pytest.raises(ValueError, match="fewer than the 2 steps"):
        train(tiny_config(), tmp_path / "run", steps=1, resume=True, progress=False)
    # more steps than the config said is allowed (it is how a run is extended)
    assert len(train(tiny_config(), tmp_path / "run", steps=6, resume=True, progress=False).losses) == 6


@pytest.mark.parametrize("key,value", [("grad_clip", -1.0), ("grad_clip", 0.0), ("lr", float("inf")), ("lr", -1e-3),
                                       ("warmup", -1), ("sigma_data", float("nan")), ("betas", [0.9, 1.5]),
                                       ("name", "../../escape"), ("batch_size", 2.5)])
def test_config_rejects_bad_numbers(key, value):
    with pytest.raises(ValueError, match=key):
        TrainConfig.from_dict(tiny_config(**{key: value}))


def test_output_path_checks(tmp_path):
    inp = tmp_path / "in.h5"
    inp.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(ValueError, match="is the input"):
        check_output_path(tmp_path / "." / "in.h5", inputs=[inp])
    hard = tmp_path / "hard.h5"
    os.link(inp, hard)
    with pytest.raises(ValueError, match="is the input"):  # same inode, other name
        check_output_path(hard, inputs=[inp], overwrite=True)
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "target.h5")
    with pytest.raises(ValueError, match="symbolic link"):
        check_output_path(link)
    with pytest.raises(ValueError, match="folder"):
        check_output_path(tmp_path)
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        check_output_path(fifo, overwrite=True)
    other = tmp_path / "photo.h5"
    other.write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(ValueError, match="--overwrite"):
        check_output_path(other)
    assert check_output_path(other, overwrite=True) == other
    assert check_output_path(inp) == inp  # an existing HDF5 file that is not an input may be replaced
    assert check_output_path(tmp_path / "new" / "deeper" / "o.h5").parent.is_dir()
    with pytest.raises(ValueError, match="Not a directory"):
        check_output_path(inp / "o.h5")
    with pytest.raises(ValueError, match="not a folder"):
        check_output_dir(inp)


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_output_refuses_device_node(tmp_path):
    dev = tmp_path / "null"
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    with pytest.raises(ValueError, match="device node"):
        check_output_path(dev, overwrite=True)
    with pytest.raises(ValueError, match="not a regular file"):
        with atomic_path(dev) as tmp:
            tmp.write_text("x")
    assert stat.S_ISCHR(dev.stat().st_mode)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create the folder"):  # a file where a folder must go
        check_output_dir(blocker / "sub")
    if os.geteuid() != 0:  # root writes in read-only folders; then only the case above applies
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="cannot write"):
                check_output_path(ro / "o.h5")
        finally:
            ro.chmod(0o700)


def test_stale_temporaries_removed(tmp_path):
    out = tmp_path / "d.nc"
    stale = tmp_path / ".d.nc.abc123.tmp.nc"
    stale.write_text("half")
    keep = tmp_path / ".other.nc.x.tmp.nc"
    keep.write_text("other")
    out.write_text("done")
    assert remove_stale_temporaries(out) == [stale]
    assert not stale.exists() and keep.exists()


def test_validate_measurement_and_prior():
    import deepinv as dinv

    import invdiff
    import invdiff.operators as operators
    from invdiff.utils.validate import (DivergenceError, OutOfRangeWarning, check_divergence, check_measurement,
                                        check_prior_operator, check_range)

    physics = operators.make("ct-sparse-view", views=8)
    with pytest.raises(ValueError, match=r"expected a measurement of shape \(B, 1, 91, 8\)"):
        check_measurement(torch.zeros(1, 1, 1, 1), physics)  # broadcastable, refused
    assert check_measurement(torch.zeros(2, 1, 91, 8), physics) == (1, 91, 8)
    blur = dinv.physics.BlurFFT(img_size=(1, 8, 8), filter=torch.ones(1, 1, 3, 3) / 9)  # no y_shape: probed
    assert check_measurement(torch.zeros(3, 1, 8, 8), blur, (1, 8, 8)) == (1, 8, 8)
    with pytest.raises(ValueError, match="expected a measurement"):
        check_measurement(torch.zeros(3, 1, 8, 1), blur, (1, 8, 8))
    prior = invdiff.load_prior("ct-phantom-64")
    check_prior_operator(prior, (1, 64, 64))
    del prior.x_shape  # as from a .safetensors path: the shape comes from the card
    with pytest.raises(ValueError, match=r"\(1, 64, 64\).*\(1, 32, 32\)"):
        check_prior_operator(prior, (1, 32, 32))
    with pytest.raises(DivergenceError, match="step 7"):
        check_divergence(torch.tensor([1.0, 1e6]), None, step=7, scale_bound=100.0, name="DPS")
    with pytest.raises(DivergenceError, match="step 3.*residual"):
        check_divergence(torch.ones(2), torch.tensor(1e9), step=3, scale_bound=100.0, residual_bound=10.0)
    check_divergence(torch.ones(2), torch.tensor(1.0), step=3, scale_bound=100.0, residual_bound=10.0)
    with pytest.warns(OutOfRangeWarning, match="0..255"):
        check_range(torch.full((1, 1, 4, 4), 200.0), prior)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_range(torch.rand(1, 1, 4, 4), prior)


def test_train_removes_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".state.safetensors.dead01.tmp.safetensors"  # left by a run killed mid-write
    stale.write_bytes(b"half")
    train(tiny_config(steps=2), run, progress=False)
    assert not stale.exists()
    assert sorted(p.name for p in run.iterdir()) == ["card.json", "model.safetensors", "state.safetensors"]


def test_resume_refuses_a_state_that_does_not_fit(tmp_path):
    train(tiny_config(), tmp_path / "run", progress=False, stop_after=2)
    state = load_state(tmp_path / "run" / "state.safetensors")
    state["model"] = [1, 2]  # well-formed file, wrong content
    save_state(tmp_path / "run" / "state.safetensors", state)
    with pytest.raises(ValueError, match="does not fit"):
        train(tiny_config(), tmp_path / "run", resume=True, progress=False)
    state.pop("torch_rng")
    save_state(tmp_path / "run" / "state.safetensors", state)
    with pytest.raises(ValueError, match="does not fit"):
        train(tiny_config(), tmp_path / "run", resume=True, progress=False)
