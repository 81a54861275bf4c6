"""PDE trajectory datasets: random initial conditions and forcings, batched solves, netCDF files.

Three generators, each a solver of :mod:`invdiff.operators.pde` driven by random inputs:

* ``"burgers"``: the WDNO / DiffPhyCon forced Burgers set-up on :math:`[0, 1]` with zero boundary
  values (:class:`~invdiff.operators.pde.BurgersDirichlet`): :math:`u_0` = a positive and a
  negative Gaussian bump, forcing = 8 space-time Gaussians. Variables ``u`` and ``f``
  (sample, t, x) plus the generating parameters.
* ``"ns2d"``: vorticity of 2D Navier-Stokes on :math:`[0, 1)^2` (FNO set-up: :math:`\\nu = 10^{-3}`,
  :math:`f = 0.1(\\sin 2\\pi(x+y) + \\cos 2\\pi(x+y))`, :math:`\\omega_0` a Gaussian random field with
  covariance :math:`\\propto(-\\Delta + \\tau^2)^{-\\alpha}`, :math:`\\alpha = 2.5, \\tau = 7`).
  Variable ``u`` (sample, t, x, y).
* ``"heat"``: exact advection-diffusion on the 1D or 2D torus from GRF initial conditions.

Files are xarray Datasets written as netCDF4 through h5netcdf, with coordinates ``t``, ``x``
(``y``) in the solver's (non-dimensional) units and every generator parameter, the seed and the
package version as attributes. Generation is chunked (tqdm bar), resumable (finished chunks
sit in ``<out>.partial/``; rerunning the same command continues) and atomic (the final name
appears only once complete). Sample ``i`` is drawn from its own generator seeded by
``(seed, i)``, so the data do not depend on the chunk size or on interruptions.

>>> path = simulate("heat", n=2, seed=0, out="/tmp/_invdiff_heat.nc", resolution="16", progress=False)  # doctest: +SKIP
>>> ds = open_pde_dataset(path)                                                                        # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from invdiff.utils import atomic_path, check_positive, progress as _progress
from invdiff.utils.random import rand, randn

from .resumable import chunk_plan, merge_chunks, open_partial

SCHEMA = "invdiff.pde/1"
PDES = ("burgers", "ns2d", "heat")

__all__ = [
    "PDES",
    "SCHEMA",
    "burgers_initial_condition",
    "burgers_forcing_params",
    "default_config",
    "gaussian_random_field",
    "generate",
    "open_pde_dataset",
    "simulate",
    "validate",
]


# ----------------------------------------------------------------------------- random inputs


def burgers_initial_condition(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum of Gaussian bumps :math:`u_0(x) = \\sum_j a_j \\exp(-(x - c_j)^2 / (2 w_j^2))`.

    ``params``: ``(B, J, 3)`` columns ``(a, c, w)``; ``x``: ``(n,)``. Returns ``(B, 1, n)``.
    """
    a, c, w = params[..., 0:1], params[..., 1:2], params[..., 2:3]
    x = x.to(params)
    return (a * torch.exp(-((x - c) ** 2) / (2 * w**2))).sum(1, keepdim=True)


def _uniform(lo: Sequence[float], hi: Sequence[float], shape, generator) -> torch.Tensor:
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    return lo_t + (hi_t - lo_t) * rand((*shape, len(lo)), generator=generator, dtype=torch.float64)


def burgers_u0_params(generator: torch.Generator | None = None) -> torch.Tensor:
    """``(2, 3)`` bump parameters (WDNO): amplitude U[0, 2], centre U[0.2, 0.4], width U[0.05, 0.15]
    for the positive bump; amplitude U[-2, 0], centre U[0.6, 0.8], width U[0.05, 0.15] for the negative one."""
    pos = _uniform((0.0, 0.2, 0.05), (2.0, 0.4, 0.15), (1,), generator)
    neg = _uniform((-2.0, 0.6, 0.05), (0.0, 0.8, 0.15), (1,), generator)
    return torch.cat([pos, neg], 0)


def burgers_forcing_params(t_final: float, n_gaussians: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(K, 5)`` space-time Gaussians ``(a, c, s, tau, r)`` (see :func:`~invdiff.operators.pde.gaussian_forcing`):
    :math:`a \\sim U[-1.5, 1.5]`, :math:`c \\sim U[0, 1]`, :math:`s \\sim U[0.05, 0.2]`,
    :math:`\\tau \\sim U[0, T]`, :math:`r \\sim U[0.05, 0.2]\\,T` (DiffPhyCon's form; the time
    scales are invdiff's choice, stated here since the papers do not give them)."""
    return _uniform((-1.5, 0.0, 0.05, 0.0, 0.05 * t_final), (1.5, 1.0, 0.2, t_final, 0.2 * t_final), (n_gaussians,), generator)


def gaussian_random_field(shape: Sequence[int], alpha: float = 2.5, tau: float = 7.0, sigma: float | None = None,
                          length: float = 1.0, generator: torch.Generator | None = None, n: int = 1) -> torch.Tensor:
    """Zero-mean Gaussian random fields on the torus with covariance :math:`\\sigma^2 (4\\pi^2 |m|^2 / L^2 + \\tau^2)^{-\\alpha}`.

    .. math::
        u = \\mathcal F^{-1}\\big[\\, \\sqrt{N}\\,\\sigma\\,(4\\pi^2|m|^2/L^2 + \\tau^2)^{-\\alpha/2}\\, \\mathcal F z \\,\\big],
        \\quad z \\sim \\mathcal N(0, I),

    with the mean mode removed and :math:`\\sigma = \\tau^{\\alpha - d/2}` by default: the
    initial vorticity of the FNO Navier-Stokes data (Li et al. 2021). Returns ``(n, *shape)`` float64.
    """
    shape = tuple(int(s) for s in shape)
    d = len(shape)
    sigma = tau ** (alpha - d / 2) if sigma is None else sigma
    z = randn((n, *shape), generator=generator, dtype=torch.float64)
    k2 = 0.0
    for i, m in enumerate(shape):
        f = torch.fft.rfftfreq(m, d=1.0 / m, dtype=torch.float64) if i == d - 1 else torch.fft.fftfreq(m, d=1.0 / m, dtype=torch.float64)
        view = [1] * d
        view[i] = f.numel()
        k2 = k2 + (2 * math.pi * f.reshape(view) / length) ** 2
    spec = math.sqrt(math.prod(shape)) * sigma * (k2 + tau**2) ** (-alpha / 2)
    spec = spec * (k2 > 0)
    dims = tuple(range(-d, 0))
    return torch.fft.irfftn(spec * torch.fft.rfftn(z, dim=dims), s=shape, dim=dims)


# ----------------------------------------------------------------------------- configurations


def _parse_resolution(pde: str, resolution: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    if resolution is None:
        return None
    if isinstance(resolution, int):
        vals = (resolution,)
    elif isinstance(resolution, str):
        try:
            vals = tuple(int(v) for v in resolution.lower().split("x"))
        except ValueError:
            raise ValueError(f"resolution: expected N or NxM (e.g. 128 or 64x64), got {resolution!r}") from None
    else:
        vals = tuple(int(v) for v in resolution)
    if any(v < 4 for v in vals):
        raise ValueError(f"resolution: expected at least 4 points per axis, got {vals}")
    if pde == "burgers" and len(vals) != 1:
        raise ValueError(f"resolution: burgers is 1D, expected one number, got {resolution!r}")
    if pde == "ns2d":
        vals = vals * 2 if len(vals) == 1 else vals
        if len(vals) != 2:
            raise ValueError(f"resolution: ns2d expects N or NxM, got {resolution!r}")
    if pde == "heat" and len(vals) not in (1, 2):
        raise ValueError(f"resolution: heat expects N (1D) or NxM (2D), got {resolution!r}")
    return vals


def default_config(pde: str, resolution: str | int | Sequence[int] | None = None, **overrides) -> dict:
    """The generator parameters of ``pde`` (a JSON-serialisable dict), with ``overrides`` applied.

    >>> default_config("burgers")["grid"]
    [128]
    """
    if pde not in PDES:
        raise ValueError(f"pde: expected one of {', '.join(PDES)}, got {pde!r}")
    if pde == "burgers":
        cfg = dict(grid=[128], nu=0.01, length=1.0, t_final=8.0, n_frames=81, n_gaussians=8, u_max=4.0)
    elif pde == "ns2d":
        cfg = dict(grid=[64, 64], nu=1e-3, length=1.0, forcing="fno", t_final=10.0, n_frames=11, u_max=2.0,
                   grf_alpha=2.5, grf_tau=7.0)
    else:
        cfg = dict(grid=[128], kappa=0.01, velocity=[0.5], length=1.0, t_final=1.0, n_frames=11, grf_alpha=2.0, grf_tau=5.0)
    grid = _parse_resolution(pde, resolution)
    if grid is not None:
        cfg["grid"] = list(grid)
        if pde == "heat" and len(grid) == 2 and len(cfg["velocity"]) == 1:
            cfg["velocity"] = [0.5, 0.25]
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in cfg:
            raise ValueError(f"{pde}: unknown parameter {k!r}; expected one of {sorted(cfg)}")
        cfg[k] = v
    for k, v in cfg.items():  # inf/NaN parameters would give an all-NaN data set
        vals = v if isinstance(v, (list, tuple)) else [v]
        if any(isinstance(e, float) and not math.isfinite(e) for e in vals):
            raise ValueError(f"{pde}: parameter {k}: expected finite values, got {v}")
    check_positive("t_final", cfg["t_final"])
    if int(cfg["n_frames"]) != cfg["n_frames"] or cfg["n_frames"] < 2:
        raise ValueError(f"n_frames: expected an integer >= 2, got {cfg['n_frames']}")
    return cfg


def make_solver(pde: str, cfg: dict):
    """The solver (a deepinv Physics) of a configuration from :func:`default_config`."""
    from invdiff.operators.pde import AdvectionDiffusion, BurgersDirichlet, NavierStokes2D

    if pde == "burgers":
        return BurgersDirichlet(n=cfg["grid"][0], nu=cfg["nu"], length=cfg["length"], t_final=cfg["t_final"],
                                n_frames=cfg["n_frames"], u_max=cfg["u_max"])
    if pde == "ns2d":
        return NavierStokes2D(n=tuple(cfg["grid"]), nu=cfg["nu"], length=cfg["length"], forcing=cfg["forcing"],
                              t_final=cfg["t_final"], n_frames=cfg["n_frames"], u_max=cfg["u_max"])
    return AdvectionDiffusion(tuple(cfg["grid"]), kappa=cfg["kappa"], velocity=tuple(cfg["velocity"]), length=cfg["length"],
                              t_final=cfg["t_final"], n_frames=cfg["n_frames"])


def _sample_generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def generate(pde: str, cfg: dict, seed: int, start: int, stop: int, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float64) -> dict[str, np.ndarray]:
    """Samples ``start <= i < stop`` of a data set: arrays keyed by variable name (sample axis first).

    Sample ``i`` uses a generator seeded from ``(seed, i)`` (NumPy ``SeedSequence``); the solve is
    batched over the samples on ``device`` in ``dtype``.
    """
    from invdiff.operators.pde import gaussian_forcing

    solver = make_solver(pde, cfg)
    gens = [_sample_generator(seed, i) for i in range(start, stop)]
    out: dict[str, np.ndarray] = {}
    grid = tuple(cfg["grid"])
    if pde == "burgers":
        p0 = torch.stack([burgers_u0_params(g) for g in gens])
        pf = torch.stack([burgers_forcing_params(cfg["t_final"], cfg["n_gaussians"], g) for g in gens])
        u0 = burgers_initial_condition(p0, solver.x)
        with torch.no_grad():
            u = solver(u0.to(device=device, dtype=dtype), forcing=pf.to(device=device, dtype=dtype))
        f = gaussian_forcing(pf, solver.times, solver.x)
        out.update(u=u[:, 0], f=f[:, 0], u0_params=p0, forcing_params=pf)
    else:
        alpha, tau = cfg["grf_alpha"], cfg["grf_tau"]
        u0 = torch.cat([gaussian_random_field(grid, alpha, tau, length=cfg["length"], generator=g) for g in gens])
        with torch.no_grad():
            u = solver(u0[:, None].to(device=device, dtype=dtype))
        out["u"] = u[:, 0]
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


# ----------------------------------------------------------------------------- xarray I/O


def _coords(pde: str, cfg: dict) -> dict[str, np.ndarray]:
    grid = cfg["grid"]
    t = np.linspace(0.0, cfg["t_final"], cfg["n_frames"])
    if pde == "burgers":
        return {"t": t, "x": np.linspace(0.0, cfg["length"], grid[0])}
    names = ("x", "y")[: len(grid)]
    return {"t": t, **{nm: np.arange(n) * cfg["length"] / n for nm, n in zip(names, grid)}}


def _spatial_dims(pde: str, cfg: dict) -> tuple[str, ...]:
    return ("x", "y")[: len(cfg["grid"])]


def to_dataset(pde: str, cfg: dict, seed: int, arrays: dict[str, np.ndarray], start: int = 0):
    """Wrap generated arrays as an ``xarray.Dataset`` with coordinates and attributes."""
    import xarray as xr

    from invdiff import __version__

    coords = _coords(pde, cfg)
    n = arrays["u"].shape[0]
    field_dims = ("sample", "t", *_spatial_dims(pde, cfg))
    data_vars = {"u": (field_dims, arrays["u"], {"long_name": "vorticity" if pde == "ns2d" else "solution u"})}
    if pde == "burgers":
        data_vars["f"] = (field_dims, arrays["f"], {"long_name": "forcing f(t, x)"})
        data_vars["u0_params"] = (("sample", "bump", "bump_param"), arrays["u0_params"], {"columns": "amplitude, centre, width"})
        data_vars["forcing_params"] = (("sample", "gaussian", "gaussian_param"), arrays["forcing_params"],
                                       {"columns": "amplitude, x centre, x width, t centre, t width"})
    ds = xr.Dataset(data_vars, coords={"sample": np.arange(start, start + n), **coords})
    for name in ("t", *_spatial_dims(pde, cfg)):
        ds[name].attrs.update(units="1", long_name=f"non-dimensional {'time' if name == 't' else 'position ' + name}")
    ds.attrs.update(
        invdiff_schema=SCHEMA, pde=pde, seed=int(seed), invdiff_version=__version__,
        config=json.dumps(cfg, sort_keys=True),
        **{f"param_{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in cfg.items()},
    )
    return ds


def _write(ds, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")


def simulate(pde: str, n: int, seed: int, out: str | os.PathLike, chunk: int = 16, resolution=None,
             device: str = "cpu", dtype: torch.dtype = torch.float64, progress: bool = True, **overrides) -> Path:
    """Generate ``n`` trajectories of ``pde`` into the netCDF file ``out``; return its path.

    Resumable: finished chunks are kept in ``<out>.partial/`` (each written atomically) and are
    skipped by a rerun with the same arguments; a rerun with different arguments is refused.
    Atomic: ``out`` is written to a temporary name and renamed once complete.
    """

    if int(n) != n or n < 1:
        raise ValueError(f"n: expected a positive number of samples, got {n}")
    if int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk: expected a positive integer, got {chunk}")
    cfg = default_config(pde, resolution, **overrides)
    out = Path(out)
    manifest = dict(pde=pde, n=int(n), seed=int(seed), chunk=int(chunk), config=cfg, dtype=str(dtype))
    partial = open_partial(out, manifest)
    bounds, files, todo = chunk_plan(partial, n, chunk)
    bar = _progress(todo, progress, desc=f"simulate {pde}", unit="chunk", total=len(bounds), initial=len(bounds) - len(todo))
    try:
        for (s, e), f in bar:
            arrays = generate(pde, cfg, seed, s, e, device, dtype)
            for k, v in arrays.items():
                if not np.isfinite(v).all():
                    raise FloatingPointError(f"simulate {pde}: non-finite values in {k!r} of samples {s}..{e - 1}; "
                                             f"the settings are unstable ({json.dumps(cfg)})")
            _write(to_dataset(pde, cfg, seed, arrays, start=s), f)
    except Exception:
        if not any(partial.glob("chunk_*.nc")):  # a failed run with nothing to resume leaves nothing behind
            shutil.rmtree(partial, ignore_errors=True)
        raise
    merge_chunks(files, out, partial, n, _write)
    return out


# ----------------------------------------------------------------------------- readers


def _expected_vars(pde: str, ndim: int) -> dict[str, tuple[str, ...]]:
    field = ("sample", "t", *("x", "y")[:ndim])
    if pde == "burgers":
        return {"u": field, "f": field, "u0_params": ("sample", "bump", "bump_param"),
                "forcing_params": ("sample", "gaussian", "gaussian_param")}
    return {"u": field}


def validate(ds, pde: str | None = None, path: str = "dataset") -> None:
    """Raise ``ValueError`` unless ``ds`` follows the invdiff PDE schema (see the module docstring)."""
    attrs = ds.attrs
    if attrs.get("invdiff_schema") != SCHEMA:
        raise ValueError(f"{path}: not an invdiff PDE dataset (attribute invdiff_schema={attrs.get('invdiff_schema')!r}, expected {SCHEMA!r})")
    got = attrs.get("pde")
    if got not in PDES:
        raise ValueError(f"{path}: attribute pde={got!r}, expected one of {PDES}")
    if pde is not None and got != pde:
        raise ValueError(f"{path}: holds pde={got!r}, expected {pde!r}")
    try:
        cfg = json.loads(attrs["config"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: missing or unreadable 'config' attribute ({exc})") from None
    ndim = len(cfg["grid"])
    for name, dims in _expected_vars(got, ndim).items():
        if name not in ds.variables:
            raise ValueError(f"{path}: missing variable {name!r} (expected {sorted(_expected_vars(got, ndim))})")
        if tuple(ds[name].dims) != dims:
            raise ValueError(f"{path}: variable {name!r} has dims {tuple(ds[name].dims)}, expected {dims}")
    sizes = dict(ds.sizes)
    want = {"t": cfg["n_frames"], **dict(zip(("x", "y"), cfg["grid"]))}
    for dim, size in want.items():
        if sizes.get(dim) != size:
            raise ValueError(f"{path}: dimension {dim!r} has size {sizes.get(dim)}, expected {size} from the config")
    n = attrs.get("n_samples")
    if n is None or sizes.get("sample") != int(n):
        raise ValueError(f"{path}: {sizes.get('sample')} samples, expected n_samples={n} (incomplete file?)")
    t = np.asarray(ds["t"])
    if not (t[0] == 0 and np.all(np.diff(t) > 0) and np.isclose(t[-1], cfg["t_final"])):
        raise ValueError(f"{path}: coordinate t must increase from 0 to t_final={cfg['t_final']}")
    if not np.all(np.isfinite(np.asarray(ds["u"]))):
        raise ValueError(f"{path}: variable 'u' holds NaN/inf values")


def open_pde_dataset(path: str | os.PathLike, pde: str | None = None):
    """Read and validate a file written by :func:`simulate`; return an in-memory ``xarray.Dataset``.

    Raises ``FileNotFoundError`` if missing and ``ValueError`` for a truncated/corrupt file or a
    schema mismatch (wrong pde, missing variables, wrong dims or sizes).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as exc:  # h5py/h5netcdf raise OSError, KeyError, ... on damaged files
        raise ValueError(f"{path}: not a readable netCDF4/HDF5 file (truncated or corrupt?): {type(exc).__name__}: {exc}") from None
    validate(ds, pde, str(path))
    return ds


def trajectories(ds, variable: str = "u", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A variable as a tensor ``(sample, 1, t, *grid)``: the solvers' trajectory layout."""
    return torch.as_tensor(np.asarray(ds[variable]), dtype=dtype).unsqueeze(1)
