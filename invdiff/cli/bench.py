"""`invdiff bench TARGET`: run a benchmark script and write its table.

Each target is a module ``invdiff.benchmarks.<target>`` with ``run(out_dir, quick, device) -> list[dict]``
(rows), documented in its docstring; this command writes the rows as Markdown and CSV under
``--out`` and prints the Markdown table.
"""
from __future__ import annotations

HELP = "Run a benchmark and write its table (Markdown + CSV)."
TARGETS = {
    "solvers": "unconditional ODE/SDE solvers vs the exact Gaussian flow and a fine reference",
    "operators": "forward/adjoint time of each operator vs its floor (FFT, deepinv)",
    "samplers": "posterior samplers vs exact posteriors, and vs deepinv's DPS",
    "priors": "shipped priors: denoising MSE and reconstruction PSNR vs NFE",
    "pde": "PDE solvers: throughput, accuracy vs exact solutions, gradient cost",
    "channel": "channel estimation on HPSM channels: NMSE vs SNR of LS, LMMSE, OMP (DFT/polar), PnP-ODE, Langevin; NFE, time",
    "surrogates": "Burgers trajectory surrogates (WDNO, physical diffusion, FNO, persistence) vs the solver: error, speed; the WDNO super-resolution stage at 2x vs interpolation; the latent diffusion surrogate on periodic Burgers with random viscosity",
    "pde-inverse": "Burgers trajectory and initial state from sparse sensors (DPS/SMC with the WDNO prior), NS vorticity from 2x/4x/8x sub-sampling (DPS/DAPS/SMC), vs solver-in-the-loop",
    "aps": "discrete priors: APS/SVDD/SGDD/masked SMC vs exact posteriors (TV) and on digits and 32x32 phantom tasks (PSNR vs NFE), continuous DPS beside",
    "gpu": "CUDA: sampler step time vs bare network evaluation on 256^2 CT, SMC particles/s for N = 64..1024 (skips without a GPU)",
    "mbir3d": "3D CT/MRI volumes with 2D priors: DiffusionMBIR, DDS, slice-independent diffusion, 3D TV (PSNR/SSIM per plane, NFE, memory)",
    "calibration": "simulation-based calibration (rank histograms, 90% coverage) of every continuous sampler at its defaults",
    "uncertainty": "posterior uncertainty targets: min ESS, 90% coverage, error-std correlation on CT/MRI; SMC step cost; mixture; phantom TV",
    "prior-size": "128x128 CT: the prior trained at 128 vs the 64x64 prior used at 128 (size-agnostic) vs TV and FBP (PSNR), denoising MSE",
    "diagnostics": "hallucination maps (x0 variance) on phantoms with a rare feature; out-of-domain scores (camera, Shepp-Logan)",
    "all": "every target above (each in quick mode with --quick; a failing target is reported, not fatal) and one report, OUT/report.md",
}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help=HELP, description=HELP)
    p.add_argument("target", choices=sorted(TARGETS), help="; ".join(f"{k}: {v}" for k, v in TARGETS.items()).replace("%", "%%"))
    p.add_argument("--out", default="results/bench", help="output folder (default: results/bench)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--resume", action="store_true",
                   help="with `all`: read back the targets that already finished in OUT in the same mode "
                        "(OUT/<target>/run.json) instead of rerunning them")
    p.add_argument("--report-only", action="store_true",
                   help="with `all`: run nothing, rewrite OUT/report.md from the targets that already finished in OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    import importlib

    from invdiff.benchmarks.table import write_table

    for flag in ("resume", "report_only"):
        if getattr(args, flag) and args.target != "all":
            raise ValueError(f"--{flag.replace('_', '-')} applies to `invdiff bench all` only (it reads back finished targets of a report)")
    module = importlib.import_module(f"invdiff.benchmarks.{args.target.replace('-', '_')}")
    extra = dict(resume=args.resume, report_only=args.report_only) if args.target == "all" else {}
    tables = module.run(out_dir=args.out, quick=args.quick, device=args.device, **extra)
    if isinstance(tables, list):  # a single table
        tables = {args.target: tables}
    for name, rows in tables.items():
        print(write_table(rows, args.out, name))
    return 0
