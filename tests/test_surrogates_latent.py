"""Latent diffusion surrogate and the periodic Burgers data (invdiff.surrogates.latent, data_periodic, latent_train)."""
from __future__ import annotations

import doctest
import json
import math

import pytest
import torch

from invdiff.operators.pde.burgers import cole_hopf
from invdiff.surrogates import available, load_surrogate
from invdiff.surrogates.data_periodic import (
    BurgersPeriodicNu,
    grf_sigma,
    nu_channel,
    periodic_burgers_trajectories,
    periodic_inputs,
    periodic_solve,
)
from invdiff.surrogates.latent import LatentSurrogate, TrajectoryAutoencoder, parse_parameters
from invdiff.surrogates.latent_train import load_latent

SHIPPED = "burgers-latent-32x64"


def _small(seed: int = 0) -> LatentSurrogate:
    torch.manual_seed(seed)
    m = LatentSurrogate(nt=8, nx=16, latent_channels=2, ae_channels=(4, 8), channels=(8, 8), emb_dim=8, param_dim=4).eval()
    torch.nn.init.normal_(m.net.out.weight, std=0.3)  # the U-Net's output layer starts at zero: make F depend on its input
    return m


# ----------------------------------------------------------------------------- periodic data


def test_cole_hopf_two_viscosities_in_one_batch():
    """Exact solution of periodic viscous Burgers on [0, 1) (k = 2 pi), one nu per trajectory in one solve."""
    n, nt, k = 64, 8, 2 * math.pi
    x = torch.arange(n, dtype=torch.float64) / n
    nu = torch.tensor([0.02, 0.05], dtype=torch.float64)
    u0 = torch.stack([cole_hopf(x, 0.0, float(v), k=k, eps=0.5) for v in nu])
    u = periodic_solve(u0, nu, nt, t_final=0.5, dt_max=1e-3)
    assert u.shape == (2, nt, n)
    for b, v in enumerate(nu):
        for j in range(nt):
            exact = cole_hopf(x, j * 0.5 / nt, float(v), k=k, eps=0.5)
            assert (u[b, j] - exact).abs().max() < 1e-9, (b, j)


def test_periodic_translation_equivariance_and_mean():
    """On the torus, shifting u0 by m nodes shifts the whole trajectory by m nodes; the mean is conserved."""
    u0, nu, _ = periodic_inputs(2, seed=3, nx=16)
    u0 = u0[:, ::4] + 0.1  # 128 points, nonzero mean
    u = periodic_solve(u0, nu, 4, t_final=0.2)
    us = periodic_solve(torch.roll(u0, 37, -1), nu, 4, t_final=0.2)
    assert (torch.roll(u, 37, -1) - us).abs().max() < 1e-11
    assert (u.mean(-1) - u0.mean(-1, keepdim=True)).abs().max() < 1e-13


def test_periodic_dataset_layout_and_reproducibility():
    d = periodic_burgers_trajectories(3, seed=0, nx=16, nt=4)
    assert d["u"].shape == (3, 4, 16) and d["u0"].shape == (3, 16) and d["nu"].shape == (3,)
    assert torch.equal(d["u"][:, 0], d["u0"])
    assert bool(((d["nu"].log10() >= -2.5 - 1e-6) & (d["nu"].log10() <= -1.5 + 1e-6)).all())
    one = periodic_burgers_trajectories(1, seed=0, nx=16, nt=4, start=2)  # sample i depends on (seed, i) only
    assert torch.equal(one["u"][0], d["u"][2]) and one["nu"][0] == d["nu"][2]
    # the saved grid is every 8th point of the 128-point solve, x_j = j / 16 exactly
    u0_fine, nu, _ = periodic_inputs(3, seed=0, nx=16)
    assert torch.equal(d["u0"], u0_fine[:, ::8].float())


def test_grf_sigma_gives_the_stated_std():
    """Pointwise std of u0 is u_std = 0.5: 4000 independent draws at x = 0, 4 standard errors of the variance."""
    from invdiff.datasets.pde import gaussian_random_field

    sigma = grf_sigma(64, 3.0, 5.0, 0.5)
    u = gaussian_random_field((64,), 3.0, 5.0, sigma=sigma, generator=torch.Generator().manual_seed(0), n=4000)[:, 0]
    var, se = float(u.var()), 0.25 * math.sqrt(2 / 4000)
    assert abs(var - 0.25) < 4 * se


def test_periodic_bad_input():
    with pytest.raises(ValueError, match="nu"):
        BurgersPeriodicNu(n=16, nu=torch.tensor([0.01, -1.0]))
    with pytest.raises(ValueError, match="one trajectory per nu"):
        BurgersPeriodicNu(n=16, nu=torch.tensor([0.01, 0.02]), t_final=0.1, n_frames=2)(torch.zeros(3, 1, 16))
    with pytest.raises(ValueError, match="unknown settings"):
        periodic_burgers_trajectories(1, seed=0, viscosity=0.1)
    with pytest.raises(ValueError, match="log10_nu"):
        periodic_inputs(1, seed=0, log10_nu=(-1.0, -2.0))


def test_nu_channel():
    c = nu_channel(torch.tensor([10**-2.5, 10**-1.5]), 2, 3)
    assert c.shape == (2, 2, 3)
    assert torch.allclose(c[0], torch.full((2, 3), -1.0)) and torch.allclose(c[1], torch.full((2, 3), 1.0))


# ----------------------------------------------------------------------------- parameter strings


def test_parse_parameters():
    assert parse_parameters("burgers periodic nu=0.012") == {"pde": "burgers", "boundary": "periodic", "nu": 0.012}
    assert parse_parameters("  NU=1e-2\tPeriodic  Burgers ") == {"pde": "burgers", "boundary": "periodic", "nu": 0.01}


@pytest.mark.parametrize("text, match", [
    ("burgers periodic", "missing nu"),
    ("periodic nu=0.01", "missing the pde word"),
    ("burgers nu=0.01", "missing the boundary word"),
    ("burgers dirichlet nu=0.01", "unknown word 'dirichlet'"),
    ("burgers periodic nu=0.01 nu=0.02", "nu given twice"),
    ("burgers periodic periodic nu=0.01", "two boundary words"),
    ("burgers periodic nu=abc", "is not a number"),
    ("burgers periodic nu=-0.01", "finite nu > 0"),
    ("burgers periodic nu=nan", "finite nu > 0"),
    ("burgers periodic re=100", "unknown key 're'"),
])
def test_parse_parameters_rejects(text, match):
    with pytest.raises(ValueError, match=match):
        parse_parameters(text)


def test_parse_parameters_type():
    with pytest.raises(TypeError, match="expected str"):
        parse_parameters(0.01)


# ----------------------------------------------------------------------------- autoencoder


def test_autoencoder_shapes_and_shift_equivariance():
    """Latent grid (C, nt/4, nx/4); circular convolutions in x: a shift by 4 nodes is a shift by one latent column,
    and a latent shift by one column shifts the decoded trajectory by 4 nodes."""
    torch.manual_seed(0)
    ae = TrajectoryAutoencoder(3, (4, 8)).double()
    u = torch.randn(2, 8, 32, dtype=torch.float64)
    z = ae.encode(u)
    assert z.shape == (2, 3, 2, 8)
    assert ae.decode(z).shape == u.shape and ae(u).shape == u.shape
    assert torch.allclose(ae.encode(torch.roll(u, 4, -1)), torch.roll(z, 1, -1), atol=1e-12)
    assert torch.allclose(ae.decode(torch.roll(z, 1, -1)), torch.roll(ae.decode(z), 4, -1), atol=1e-12)
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.encode(torch.zeros(1, 6, 32))


def test_latent_standardisation_roundtrip():
    m = _small().double()
    u = torch.randn(5, 8, 16, dtype=torch.float64)
    z = m.ae.encode(u)
    m.fit_latent_scaling(z)
    x = m.to_latent(u)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(m.from_latent(x), m.ae(u), atol=1e-6)


# ----------------------------------------------------------------------------- the conditional prior


def test_conditioning_changes_the_denoiser():
    m = _small()
    g = torch.Generator().manual_seed(0)
    x, u0a, u0b = torch.randn(2, *m.x_shape, generator=g), torch.randn(2, 16, generator=g), torch.randn(2, 16, generator=g)
    d = m(x, 1.0, u0=u0a, nu=0.01)
    assert (d - m(x, 1.0, u0=u0b, nu=0.01)).abs().max() > 1e-3
    assert (d - m(x, 1.0, u0=u0a, nu=0.02)).abs().max() > 1e-3
    # u0 enters position-wise: changing u0 at node 4i + j changes the condition at latent column i only
    c1 = m.condition(2, u0a, nu=0.01)
    u0c = u0a.clone()
    u0c[:, 4 * 2 + 1] += 1.0
    diff = (m.condition(2, u0c, nu=0.01) - c1).abs().sum((0, 2))  # (channels, columns)
    assert diff[1, 2] > 0 and diff.sum() == diff[1, 2]


def test_text_and_numeric_conditioning_agree_and_initial_state_is_exact():
    m = _small()
    u0 = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    a = m.predict(u0, nu=0.012, steps=3, generator=torch.Generator().manual_seed(5))
    b = m.predict(u0, text="burgers periodic nu=0.012", steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(a[:, 0], u0)
    ens = m.predict(u0, text=["burgers periodic nu=0.005", "burgers periodic nu=0.01", "burgers periodic nu=0.03"],
                    steps=2, n_samples=2, generator=torch.Generator().manual_seed(0))
    assert ens.shape == (2, 3, 8, 16) and torch.equal(ens[1, :, 0], u0)
    ddim = m.predict(u0, nu=0.012, steps=3, method="ddim", generator=torch.Generator().manual_seed(5))
    assert torch.equal(ddim[:, 0], u0) and not torch.equal(ddim, a)  # another solver of the same ODE


def test_prior_bad_input():
    m = _small()
    x = torch.zeros(2, *m.x_shape)
    with pytest.raises(ValueError, match="exactly one"):
        m(x, 1.0, u0=torch.zeros(2, 16))
    with pytest.raises(ValueError, match="exactly one"):
        m(x, 1.0, u0=torch.zeros(2, 16), nu=0.01, text="burgers periodic nu=0.01")
    with pytest.raises(ValueError, match="trained on"):
        m(x, 1.0, u0=torch.zeros(2, 16), nu=0.5)
    with pytest.raises(ValueError, match="trained on"):
        m(x, 1.0, u0=torch.zeros(2, 16), text="burgers periodic nu=1e-4")
    with pytest.raises(ValueError, match="needs the initial state"):
        m(x, 1.0, nu=0.01)
    with pytest.raises(ValueError, match="sigma"):
        m(x, 0.0, u0=torch.zeros(2, 16), nu=0.01)
    with pytest.raises(ValueError, match="expected"):
        m(torch.zeros(2, 3, 2, 4), 1.0, u0=torch.zeros(2, 16), nu=0.01)
    with pytest.raises(ValueError, match="NaN|inf|finite"):
        m(x, 1.0, u0=torch.full((2, 16), float("nan")), nu=0.01)
    with pytest.raises(ValueError, match="one string or 2"):
        m(x, 1.0, u0=torch.zeros(2, 16), text=["burgers periodic nu=0.01"] * 3)


# ----------------------------------------------------------------------------- training


def test_train_latent_freezes_the_autoencoder_and_reports_each_stage():
    """Stage 2 trains only the denoiser and the parameter embedding: the returned model's autoencoder is exactly
    stage 1's EMA, the diffusion stage counts only its own parameters, ``checkpoint`` gets the EMA model, both
    stages report the card's fields (merged by ``card_of``), and a CPU-time limit of 0 stops a stage after one step.
    About 1 s."""
    from invdiff.surrogates.latent_train import card_of, train_latent

    data = periodic_burgers_trajectories(6, seed=0, nx=16, nt=8, solve_factor=2)
    m = _small()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    saved, logs = [], []
    ae = dict(steps=6, batch=3, lr=2e-3, warmup=2)
    dm = dict(steps=50, batch=3, lr=1e-3, warmup=2, time_limit=0.0)
    ema, stats = train_latent(m, data, ae, dm, seed=1, log=logs.append, checkpoint=saved.append)
    assert all(torch.equal(v, m.ae.state_dict()[k]) for k, v in ema.ae.state_dict().items())
    assert not torch.equal(ema.ae.enc[0].weight, before["ae.enc.0.weight"])  # stage 1 did train it
    assert not torch.equal(ema.net.out.weight, before["net.out.weight"])
    n_dm = sum(p.numel() for p in (*m.net.parameters(), *m.params.parameters()))
    assert stats["diffusion"]["parameters"] == n_dm < stats["parameters"] == sum(p.numel() for p in m.parameters())
    assert stats["autoencoder"]["steps"] == 6 and stats["diffusion"]["steps"] == 1
    assert len(saved) == 1 and saved[0] is ema
    assert any(line.startswith("latent diffusion: CPU time limit 0 s reached at step 1") for line in logs)
    cfg = {"model": "latent", "network": m.config, "autoencoder": ae, "diffusion": dm}
    card = card_of(cfg, stats, "cmd")
    for section in ("autoencoder", "diffusion"):
        for key in ("max_steps", "steps", "final_loss", "final_loss_window", "wall_seconds", "cpu_seconds", "parameters"):
            assert key in card[section], (section, key)
        assert math.isfinite(card[section]["final_loss"])
    assert card["diffusion"]["max_steps"] == 50 and "train_rel_l2" in card["autoencoder"]


def test_doctests():
    from invdiff.surrogates import data_periodic, latent, latent_train, train

    for mod in (data_periodic, latent, latent_train, train):
        res = doctest.testmod(mod, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, f"{mod.__name__}: {res.failed} doctest failures"


# ----------------------------------------------------------------------------- shipped weights


def test_shipped_latent_surrogate_loads_and_card_matches():
    from pathlib import Path

    from safetensors import safe_open

    from invdiff.surrogates import ASSETS

    assert SHIPPED in available()
    path = ASSETS / f"{SHIPPED}.safetensors"
    card = json.loads(Path(path.with_suffix(".json")).read_text())
    model = load_surrogate(SHIPPED)
    assert isinstance(model, LatentSurrogate)
    assert model.card == card and card["model"] == "latent" and "partial" not in card
    assert card["network"] == model.config
    for key in ("data", "autoencoder", "diffusion", "seed", "command", "cpu_seconds", "wall_seconds"):
        assert key in card, key
    assert card["data"]["pde"] == "burgers-periodic" and card["data"]["seed"] == 0
    assert path.stat().st_size < 2_000_000
    with safe_open(str(path), "pt") as fh:
        assert all(fh.get_tensor(k).dtype == torch.float16 for k in fh.keys() if k.endswith(".weight"))
    u0 = periodic_burgers_trajectories(2, seed=7, nt=4)["u0"]  # any u0; frame 0 stays exact
    out = model.predict(u0, text="burgers periodic nu=0.01", steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 32, 64) and torch.equal(out[:, 0], u0) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="expected 'latent'"):
        load_latent(ASSETS / "burgers-wdno-32x64.safetensors")


def test_shipped_latent_surrogate_beats_persistence_and_uses_nu():
    """On 8 held-out trajectories (data seed 1), the shipped model is far closer to the solver than persistence
    (relative L2 0.045 against 0.735 when written), and much worse when given the wrong viscosities (0.25):
    the nu conditioning carries the information. About 2 s."""
    d = periodic_burgers_trajectories(8, seed=1)
    model = load_surrogate(SHIPPED)

    def rel(pred):
        return float(((pred[:, 1:] - d["u"][:, 1:]).flatten(1).norm(dim=1) / d["u"][:, 1:].flatten(1).norm(dim=1)).mean())

    good = rel(model.predict(d["u0"], nu=d["nu"], steps=20, generator=torch.Generator().manual_seed(0)))
    wrong = rel(model.predict(d["u0"], nu=d["nu"].flip(0), steps=20, generator=torch.Generator().manual_seed(0)))
    pers = rel(d["u0"][:, None].expand(-1, 32, -1))
    assert good < 0.2 * pers
    assert good < 0.5 * wrong
