"""Training loop: learns the exact Gaussian denoiser, resumes exactly, DDP ranks agree, cards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from invdiff.diffusion.gmm import Gaussian
from invdiff.diffusion.training import TrainConfig, load_checkpoint, train


def tiny_config(**kw) -> dict:
    cfg = {
        "name": "tiny",
        "network": {"name": "mlp", "dim": 2, "hidden": 32, "depth": 2},
        "data": {"generator": "gaussian", "params": {"dim": 2, "mean": 0.5, "std": 0.3}},
        "sigma_data": 0.3,
        "data_mean": 0.5,
        "batch_size": 64,
        "steps": 20,
        "lr": 3e-3,
        "warmup": 5,
        "checkpoint_every": 7,
        "seed": 3,
    }
    cfg.update(kw)
    return cfg


def test_learns_exact_gaussian_denoiser(tmp_path):
    # data N(m, s^2 I): the trained D must approach the exact denoiser m + s^2/(s^2+sigma^2) (x - m)
    # (computed by invdiff.diffusion.gmm.Gaussian) much better than the untrained shrinkage with a
    # wrong sigma_data
    torch.manual_seed(0)
    cfg = tiny_config(steps=600, batch_size=256, sigma_data=0.6, data_mean=0.0, ema_decay=0.99)
    res = train(cfg, tmp_path / "run", progress=False)
    exact = Gaussian(torch.full((2,), 0.5, dtype=torch.float64), 0.09)
    g = torch.Generator().manual_seed(5)
    for sigma in (0.1, 0.3, 1.0):
        x = 0.5 + (0.09 + sigma**2) ** 0.5 * torch.randn(2000, 2, generator=g, dtype=torch.float64)
        ref = exact(x, sigma)
        with torch.no_grad():
            got = res.prior(x.float(), sigma).double()
        err = float((got - ref).pow(2).mean())
        post_var = 0.09 * sigma**2 / (0.09 + sigma**2)  # the exact denoiser's own MSE
        assert err < 0.1 * post_var, (sigma, err, post_var)


def test_resume_is_exact(tmp_path):
    k = 10
    full = train(tiny_config(steps=2 * k), tmp_path / "full", progress=False)
    part = train(tiny_config(steps=2 * k), tmp_path / "part", progress=False, stop_after=k)
    assert len(part.losses) == k
    rest = train(tiny_config(steps=2 * k), tmp_path / "part", progress=False, resume=True)
    assert rest.losses == full.losses  # bit-identical loss curve
    for a, b in zip(full.prior.state_dict().values(), rest.prior.state_dict().values()):
        assert torch.equal(a, b)
    a = json.loads((tmp_path / "full" / "card.json").read_text())
    b = json.loads((tmp_path / "part" / "card.json").read_text())
    assert a["final_loss"] == b["final_loss"] and a["steps"] == b["steps"] == 2 * k


def test_card_and_checkpoint(tmp_path):
    res = train(tiny_config(), tmp_path / "run", progress=False, command="invdiff train --config x.json")
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    for key in ("network", "data", "seed", "steps", "final_loss", "package_version", "command", "sigma_data"):
        assert key in card
    assert card["command"] == "invdiff train --config x.json" and card["steps"] == 20
    assert card["final_loss"] == pytest.approx(sum(res.losses) / len(res.losses))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["card.json", "model.safetensors", "state.safetensors"]
    D = load_checkpoint(tmp_path / "run")
    x = torch.randn(4, 2)
    assert torch.equal(D(x, 0.5), res.prior(x, 0.5))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict(tiny_config(learning_rate=1.0))
    with pytest.raises(ValueError, match="missing"):
        TrainConfig.from_dict({"name": "x"})
    with pytest.raises(FileNotFoundError, match="state.safetensors"):
        train(tiny_config(), tmp_path / "none", resume=True, progress=False)


def test_cli_train(tmp_path):
    from invdiff.cli import main

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_config()))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "o"), "--steps", "3", "--no-progress"]) == 0
    assert json.loads((tmp_path / "o" / "card.json").read_text())["steps"] == 3


SCRIPT = """
import json, os, sys, torch
from safetensors.torch import save_file
from invdiff.diffusion.training import train
cfg = json.loads(sys.argv[1]); out = sys.argv[2]
res = train(cfg, out, progress=False)
save_file({k: v.clone().contiguous() for k, v in res.prior.state_dict().items()}, os.path.join(out, f"rank{os.environ['RANK']}.safetensors"))
"""


def test_ddp_two_ranks_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "ddp"
    out.mkdir()
    cfg = tiny_config(steps=6, checkpoint_every=100)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(script), json.dumps(cfg), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    w0 = load_file(out / "rank0.safetensors")
    w1 = load_file(out / "rank1.safetensors")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # the ranks drew different data (seed + 1000 rank), so training moved the weights
    single = train(cfg, tmp_path / "single", progress=False)
    assert not all(torch.equal(w0[k], v) for k, v in single.prior.state_dict().items())
    assert json.loads((out / "card.json").read_text())["world_size"] == 2
