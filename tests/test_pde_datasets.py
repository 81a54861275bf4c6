"""PDE datasets: contents against exact/independent references, resumable and atomic writing, schema errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

import invdiff.datasets.pde as pde_data
from invdiff.cli import main as cli_main
from invdiff.datasets.pde import gaussian_random_field, open_pde_dataset, simulate

HEAT = dict(resolution="16", n_frames=5, progress=False)
BURGERS = dict(resolution="33", n_frames=4, t_final=0.3, progress=False)


def test_heat_file_matches_the_exact_fourier_solution(tmp_path):
    path = simulate("heat", n=3, seed=0, out=tmp_path / "heat.nc", chunk=2, **HEAT)
    ds = open_pde_dataset(path, "heat")
    assert dict(ds["u"].sizes) == {"sample": 3, "t": 5, "x": 16}
    np.testing.assert_allclose(ds["x"].values, np.arange(16) / 16)
    np.testing.assert_allclose(ds["t"].values, np.linspace(0, 1, 5))
    cfg = json.loads(ds.attrs["config"])
    assert cfg["kappa"] == 0.01 and ds.attrs["seed"] == 0 and "invdiff_version" in ds.attrs
    # independent numpy solution: u_hat(t) = exp(-kappa k^2 t - i c k t) u_hat(0), Nyquist advection 0
    u0 = ds["u"].values[:, 0]
    k = 2 * np.pi * np.fft.fftfreq(16, d=1 / 16)
    kd = k.copy()
    kd[8] = 0
    for j, t in enumerate(ds["t"].values):
        ref = np.real(np.fft.ifft(np.exp((-cfg["kappa"] * k**2 - 1j * cfg["velocity"][0] * kd) * t) * np.fft.fft(u0, axis=-1), axis=-1))
        np.testing.assert_allclose(ds["u"].values[:, j], ref, atol=1e-12)


def test_burgers_file_holds_its_generating_inputs(tmp_path):
    ds = open_pde_dataset(simulate("burgers", n=2, seed=3, out=tmp_path / "b.nc", **BURGERS), "burgers")
    x, t = ds["x"].values, ds["t"].values
    p0, pf = ds["u0_params"].values, ds["forcing_params"].values
    u0 = np.zeros((2, x.size))
    for b in range(2):
        for a, c, w in p0[b]:
            u0[b] += a * np.exp(-((x - c) ** 2) / (2 * w**2))
    np.testing.assert_allclose(ds["u"].values[:, 0, 1:-1], u0[:, 1:-1], atol=1e-12)
    assert np.all(ds["u"].values[:, :, [0, -1]] == 0)
    f = np.zeros((2, t.size, x.size))
    for b in range(2):
        for a, c, s, tau, r in pf[b]:
            f[b] += a * np.exp(-((x[None] - c) ** 2) / (2 * s * s) - ((t[:, None] - tau) ** 2) / (2 * r * r))
    np.testing.assert_allclose(ds["f"].values, f, atol=1e-12)
    # documented parameter ranges (WDNO)
    assert np.all((p0[:, 0, 0] >= 0) & (p0[:, 0, 0] <= 2) & (p0[:, 1, 0] <= 0) & (p0[:, 0, 1] >= 0.2) & (p0[:, 1, 1] >= 0.6))


def test_data_do_not_depend_on_chunk_size(tmp_path):
    a = open_pde_dataset(simulate("heat", n=5, seed=7, out=tmp_path / "a.nc", chunk=2, **HEAT))
    b = open_pde_dataset(simulate("heat", n=5, seed=7, out=tmp_path / "b.nc", chunk=5, **HEAT))
    c = open_pde_dataset(simulate("heat", n=5, seed=8, out=tmp_path / "c.nc", chunk=5, **HEAT))
    np.testing.assert_array_equal(a["u"].values, b["u"].values)
    assert not np.allclose(a["u"].values, c["u"].values)


def test_interrupted_run_leaves_no_final_file_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "r.nc"
    real = pde_data.generate
    calls = []

    def flaky(*args, **kw):
        calls.append(args[3])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pde_data, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        simulate("heat", n=5, seed=1, out=out, chunk=2, **HEAT)
    assert not out.exists()
    partial = tmp_path / "r.nc.partial"
    assert sorted(p.name for p in partial.glob("chunk_*.nc")) == ["chunk_00000000_00000002.nc"]
    with pytest.raises(ValueError, match="different arguments"):
        simulate("heat", n=5, seed=2, out=out, chunk=2, **HEAT)
    simulate("heat", n=5, seed=1, out=out, chunk=2, **HEAT)
    assert calls == [0, 2, 2, 4]  # the finished chunk was not recomputed
    assert not partial.exists()
    ref = simulate("heat", n=5, seed=1, out=tmp_path / "ref.nc", chunk=5, **HEAT)
    np.testing.assert_array_equal(open_pde_dataset(out)["u"].values, open_pde_dataset(ref)["u"].values)


def test_reader_errors(tmp_path):
    path = simulate("burgers", n=2, seed=0, out=tmp_path / "b.nc", **BURGERS)
    with pytest.raises(FileNotFoundError):
        open_pde_dataset(tmp_path / "missing.nc")
    with pytest.raises(ValueError, match="holds pde='burgers', expected 'ns2d'"):
        open_pde_dataset(path, "ns2d")
    raw = path.read_bytes()
    (tmp_path / "trunc.nc").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        open_pde_dataset(tmp_path / "trunc.nc")
    ds = open_pde_dataset(path)
    ds.drop_vars("f").to_netcdf(tmp_path / "nof.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="missing variable 'f'"):
        open_pde_dataset(tmp_path / "nof.nc")
    ds.isel(sample=[0]).to_netcdf(tmp_path / "short.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="incomplete"):
        open_pde_dataset(tmp_path / "short.nc")
    xr.Dataset({"u": (("a",), np.zeros(3))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="not an invdiff PDE dataset"):
        open_pde_dataset(tmp_path / "other.nc")
    bad = ds.copy()
    bad["u"].values[0, 1, 3] = np.nan
    bad.to_netcdf(tmp_path / "nan.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="NaN"):
        open_pde_dataset(tmp_path / "nan.nc")


def test_bad_arguments_fail_before_any_file(tmp_path):
    for kw in (dict(resolution="12x"), dict(resolution="8x8x8"), dict(n_frames=1), dict(viscosity=0.1)):
        with pytest.raises(ValueError):
            simulate("burgers", n=2, seed=0, out=tmp_path / "x.nc", progress=False, **kw)
    with pytest.raises(ValueError, match="pde"):
        simulate("kdv", n=2, seed=0, out=tmp_path / "x.nc")
    assert list(tmp_path.iterdir()) == []


def test_cli_simulate(tmp_path, capsys):
    out = tmp_path / "ns.nc"
    rc = cli_main(["simulate", "ns2d", "--n", "2", "--seed", "4", "--out", str(out), "--resolution", "8",
                   "--frames", "3", "--t-final", "0.1", "--no-progress"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    ds = open_pde_dataset(out, "ns2d")
    assert dict(ds["u"].sizes) == {"sample": 2, "t": 3, "x": 8, "y": 8}
    assert cli_main(["simulate", "heat", "--n", "2", "--out", str(tmp_path / "h.nc"), "--resolution", "abc"]) == 2


def test_gaussian_random_field_spectrum():
    # E|rfft(u)_m|^2 = N sigma^2 (4 pi^2 m^2 + tau^2)^(-alpha): per mode a scaled chi^2 (2 dof; 1 dof at Nyquist),
    # so the mean over n draws has relative standard deviation 1/sqrt(n) (sqrt(2/n) at Nyquist); bound at 5 sigma
    n, N, alpha, tau = 400, 32, 2.0, 5.0
    u = gaussian_random_field((N,), alpha, tau, generator=torch.Generator().manual_seed(9), n=n)
    power = (torch.fft.rfft(u).abs() ** 2).mean(0)
    m = torch.arange(N // 2 + 1, dtype=torch.float64)
    sigma = tau ** (alpha - 0.5)
    expected = N * N * sigma**2 * (4 * math.pi**2 * m**2 + tau**2) ** (-alpha)
    rel = (power[1:] / expected[1:] - 1).abs()
    bound = 5 * torch.full_like(rel, 1 / math.sqrt(n))
    bound[-1] = 5 * math.sqrt(2 / n)
    assert power[0] < 1e-20 and torch.all(rel < bound), rel
