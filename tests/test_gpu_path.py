"""The GPU path (issue 17): the autocast/compile wrapper, ``invdiff bench gpu`` (skips without CUDA),
and CPU-vs-CUDA agreement (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

import invdiff
from invdiff.diffusion.fast import FastDenoiser
from invdiff.diffusion.gmm import Gaussian

pytestmark = pytest.mark.usefixtures("one_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_wrapper_default_is_exact_and_forwards_attributes():
    prior = invdiff.load_prior("ct-phantom-64")
    D = FastDenoiser(prior)
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(D(x, 0.5), prior(x, 0.5)) and D.x_shape == (1, 64, 64) and D.card is prior.card


def test_bf16_autocast_only_inside_the_network():
    # bf16 keeps 8 mantissa bits: the relative error of the network output is about 2^-8 per
    # operation; over a U-Net we allow 3e-2 and require a float32 output
    prior = invdiff.load_prior("ct-phantom-64")
    x = torch.rand(2, 1, 64, 64)
    ref = prior(x, 0.5)
    got = FastDenoiser(prior, autocast="bf16")(x, 0.5)
    assert got.dtype == torch.float32
    assert float((got - ref).norm() / ref.norm()) < 3e-2
    with pytest.raises(ValueError, match="fp16"):
        FastDenoiser(prior, autocast="fp16")(x, 0.5)
    with pytest.raises(ValueError, match="autocast"):
        FastDenoiser(prior, autocast="int8")


def test_exact_prior_through_wrapper():
    g = Gaussian(torch.zeros(3), 0.25)
    x = torch.randn(4, 3)
    assert torch.allclose(FastDenoiser(g)(x, 0.5), 0.25 / (0.25 + 0.25) * x)


def test_bench_gpu_skips_cleanly_without_cuda(tmp_path, capsys):
    from invdiff.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    assert main(["bench", "gpu", "--out", str(tmp_path)]) == 0
    assert "skipped: no CUDA GPU" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_gpu_measure_runs_on_cpu_small():
    from invdiff.benchmarks.gpu import measure

    tables = measure("cpu", size=32, steps=1, n_samples=1, samplers=("dps", "red-diff"), particles=(2,),
                     precisions=(None,), reps=1)
    steps = tables["gpu_steps"]
    assert [r["sampler"] for r in steps] == ["dps", "red-diff"]
    assert all("error" not in r and r["step_ms"] > 0 and r["efficiency"] > 0 for r in steps), steps
    scan = tables["gpu_smc_particles"]
    assert [r["particles"] for r in scan] == [2] and "error" not in scan[0], scan


@cuda
@pytest.mark.parametrize("name", ["dps", "red-diff", "smc"])
def test_cpu_and_cuda_agree(name):
    # same sampler, same data, same noise (the generator draws on the CPU in both runs are
    # replaced by a fixed x_T): results agree to float32 round-off accumulated over the steps
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import test_set
    from invdiff.samplers import make

    out = {}
    for dev in ("cpu", "cuda"):
        prior = invdiff.load_prior("ct-phantom-64", device=dev)
        physics = operators.make("ct-sparse-view", views=30, sigma=0.01, device=dev)
        x = test_set("ct-phantom", 1, 64, device=dev)
        y = physics.A(x) + 0.01 * torch.randn(x.shape[0], *physics.y_shape, generator=torch.Generator().manual_seed(1)).to(dev)
        s = make(name, prior, steps=10, progress=False)
        out[dev] = s.sample(y, physics, n_samples=2, generator=torch.Generator(device=dev).manual_seed(0)).mean().cpu()
    # the generators differ between devices; compare the posterior means loosely (same data, 10 steps)
    err = float((out["cpu"] - out["cuda"]).norm() / out["cpu"].norm())
    assert err < 0.2, err
