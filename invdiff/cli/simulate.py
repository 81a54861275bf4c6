"""`invdiff simulate`: Simulate PDE trajectory datasets (burgers, ns2d, heat).

Writes an xarray Dataset as netCDF (h5netcdf), dims (sample, t, x[, y]), in chunks with a
progress bar; resumable (rerun the same command after an interruption) and atomic.
See ``invdiff.datasets.pde`` and the data cards ``datasets/pde_*.md``.

    invdiff simulate burgers --n 256 --seed 0 --out data/burgers.nc
    invdiff simulate ns2d --n 64 --seed 1 --out data/ns.nc --resolution 64 --chunk 8
    invdiff simulate heat --n 100 --seed 2 --out data/heat2d.nc --resolution 32x32
    invdiff simulate channel --n 10000 --seed 0 --out data/hpsm.nc --preset 60ghz   (HPSM channels)
"""
from __future__ import annotations

HELP = "Simulate PDE trajectory datasets (burgers, ns2d, heat) and HPSM channel datasets (channel)."


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help=HELP, description=HELP)
    p.add_argument("pde", choices=["burgers", "ns2d", "heat", "channel"],
                   help="burgers: forced Dirichlet Burgers (WDNO set-up); ns2d: 2D Navier-Stokes vorticity (FNO set-up); "
                        "heat: exact advection-diffusion (1D, or 2D with --resolution NxM); "
                        "channel: HPSM near-field UM-MIMO channels (datasets/channels_hpsm.md)")
    p.add_argument("--preset", default="60ghz", choices=["60ghz", "0.3thz"], help="channel: HPSM scenario preset (default 60ghz)")
    p.add_argument("--n", type=int, required=True, help="number of trajectories")
    p.add_argument("--seed", type=int, default=0, help="seed; sample i is drawn from a generator seeded by (seed, i)")
    p.add_argument("--out", required=True, help="output netCDF file (.nc)")
    p.add_argument("--chunk", type=int, default=16, help="trajectories per solver batch and per resumable chunk (default 16)")
    p.add_argument("--resolution", default=None, help="grid: N (1D, or N x N for ns2d) or NxM (2D); default: the data card's")
    p.add_argument("--frames", type=int, default=None, help="saved frames including t=0 (default: the data card's)")
    p.add_argument("--t-final", type=float, default=None, help="final time (default: the data card's)")
    p.add_argument("--device", default="cpu", help="torch device for the solves (default: cpu)")
    p.add_argument("--float32", action="store_true", help="solve in float32 (default float64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    if args.pde == "channel":
        from invdiff.datasets.channel_sim import simulate_channels

        path = simulate_channels(args.n, seed=args.seed, out=args.out, preset=args.preset,
                                 chunk=args.chunk if args.chunk != 16 else 1024, progress=not args.no_progress)
        print(f"wrote {path}")
        return 0

    from invdiff.datasets.pde import simulate

    path = simulate(
        args.pde, n=args.n, seed=args.seed, out=args.out, chunk=args.chunk, resolution=args.resolution,
        device=args.device, dtype=torch.float32 if args.float32 else torch.float64, progress=not args.no_progress,
        n_frames=args.frames, t_final=args.t_final,
    )
    print(f"wrote {path}")
    return 0
