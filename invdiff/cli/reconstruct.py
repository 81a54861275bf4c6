"""`invdiff reconstruct`: Reconstruct from a measurement file with a chosen operator, sampler and prior.

Input: an HDF5 file with a dataset ``y`` (a measurement, ``(B, *y_shape)``) or ``x`` (a signal
``(B, *x_shape)``, from which a measurement is simulated with the operator's noise, seeded),
or a ``.npy`` signal. Output (HDF5, written atomically): ``mean``, ``std``, ``samples``
(``(n_samples, B, *x_shape)``), ``y`` and, when weighted (SMC), ``log_weights``; attributes:
operator, sampler, prior, settings, seed, NFE, wall time, package version.

Example::

    invdiff reconstruct --operator ct-sparse-view --sampler dps --prior ct-phantom-64 \\
        --input phantom.h5 --output recon.h5 --samples 4 --steps 100

Under ``torchrun`` with ``--input``, an SMC sampler (``smc``, ``twisted-smc``, ``smc-adaptive``)
splits its ``--samples`` particles over the ranks (``shard_particles``, the same result as one
process with the same seed; rank 0 writes ``--output``); other samplers are refused there (use
``--input-dir``, which shards files over the ranks)::

    torchrun --nproc_per_node 4 -m invdiff reconstruct --operator ct-sparse-view --sampler smc \\
        --prior ct-phantom-64 --input phantom.h5 --output recon.h5 --samples 1024
"""
from __future__ import annotations

import os

HELP = "Reconstruct from a measurement file with a chosen operator, sampler and prior."


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help=HELP, description=HELP)
    p.add_argument("--operator", required=True, help="operator name (invdiff.operators.available())")
    p.add_argument("--operator-args", default="{}", help='JSON keyword arguments of the operator, e.g. \'{"views": 30, "sigma": 0.01}\'')
    p.add_argument("--sampler", required=True, help="posterior sampler name (invdiff.samplers.available(): dps, dds, red-diff, smc, ...)")
    p.add_argument("--sampler-args", default="{}", help='JSON settings of the sampler, e.g. \'{"zeta": 2.0, "schedule": "karras"}\' for dps')
    p.add_argument("--prior", required=True, help="shipped prior name (e.g. ct-phantom-64) or a model.safetensors path")
    p.add_argument("--prior-size-agnostic", action="store_true", help="use a fully convolutional (U-Net) prior at the "
                   "operator's image size when it was trained at another (warns; by default a size mismatch is an error)")
    p.add_argument("--input", default=None, help="HDF5 with dataset 'y' (measurement) or 'x' (signal to simulate from), or .npy signal")
    p.add_argument("--input-dir", default=None, help="a folder of input files, reconstructed one by one (file i with seed + i) and merged "
                   "into --output; sharded over the ranks under torchrun (see invdiff/cli/_input_dir.py)")
    p.add_argument("--output", required=True, help="output HDF5 file")
    p.add_argument("--samples", type=int, default=4, help="posterior samples / particles (default 4)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    if (args.input is None) == (getattr(args, "input_dir", None) is None):
        raise ValueError("expected exactly one of --input FILE and --input-dir DIR")
    if getattr(args, "input_dir", None) is not None:
        from invdiff.cli._input_dir import run_input_dir

        return run_input_dir(args, run)
    import time
    from pathlib import Path

    import torch

    import invdiff
    import invdiff.operators as operators
    from invdiff.samplers import make as make_sampler
    from invdiff.datasets.loaders import load_array, save_hdf5
    from invdiff.datasets.loaders import hdf5_keys
    from invdiff.utils.validate import check_measurement, check_prior_operator, check_range

    if args.samples < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError(f"--samples and --steps: expected >= 1, got {args.samples}, {args.steps}")
    op_kwargs, sampler_kwargs = _json_object("--operator-args", args.operator_args), _json_object("--sampler-args", args.sampler_args)
    if args.steps is not None:
        sampler_kwargs.setdefault("steps", args.steps)
    sampler_kwargs.setdefault("progress", args.progress)
    from invdiff.samplers import available

    if args.sampler not in available():  # before loading anything
        raise ValueError(f"--sampler: unknown sampler {args.sampler!r}; available: {', '.join(available())}")
    from invdiff.cli._volume import is_volume, run_volume

    if is_volume(args.operator, args.input):  # 3D: a 2D prior slice by slice (invdiff/cli/_volume.py)
        return run_volume(args, op_kwargs, sampler_kwargs, _load_prior)
    rank, world = _particle_ranks(args)
    if world > 1 and str(args.device) == "cuda":  # under torchrun: this rank's GPU
        args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(args.device)
    prior = _load_prior(args.prior, device)
    sampler = make_sampler(args.sampler, prior, **sampler_kwargs)  # its settings are checked before any data is read
    if world > 1:
        if not hasattr(sampler, "shard_particles"):
            raise ValueError(f"under torchrun, --input shards the particles of an SMC sampler; {args.sampler} has none: "
                             "use --input-dir (files sharded over the ranks) or run one process")
        sampler.shard_particles = True
    physics = operators.make(args.operator, device=device, generator=torch.Generator(device=device).manual_seed(args.seed), **op_kwargs)
    x_shape = tuple(physics.x_shape)
    if getattr(args, "prior_size_agnostic", False):
        from invdiff.diffusion.zoo import use_at_size

        use_at_size(prior, tuple(x_shape[1:]))  # in place: the sampler holds this prior
    check_prior_operator(prior, x_shape, f"prior {args.prior}", f"operator {args.operator}")  # also for .safetensors paths
    path = Path(args.input)
    if not path.exists():
        raise FileNotFoundError(f"--input: no such file {path}")
    x_true = None
    if path.suffix.lower() in (".h5", ".hdf5"):
        keys = hdf5_keys(path)
        has_y, has_x = "y" in keys, "x" in keys
        if not (has_y or has_x):
            raise ValueError(f"--input {path}: expected a dataset 'y' (measurement) or 'x' (signal)")
        if has_y:
            y = load_array(path, key="y", expected_shape=getattr(physics, "y_shape", None)).to(device)  # complex -> (re, im)
            check_measurement(y, physics, x_shape)
        if has_x:
            x_true = load_array(path, key="x", expected_shape=x_shape).to(device)
    else:
        x_true = load_array(path, expected_shape=x_shape).to(device)
    if x_true is not None:
        check_range(x_true, prior, "the input signal")
    elif hasattr(physics, "baseline"):  # a measurement only: judge its scale by the operator's baseline
        with torch.no_grad():
            check_range(physics.baseline(y), prior, "the baseline reconstruction of y", tolerance=2.0)  # streaks, noise
    if x_true is not None and not (path.suffix.lower() in (".h5", ".hdf5") and has_y):
        y = physics(x_true)
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    t = time.perf_counter()
    out = sampler.sample(y, physics, n_samples=args.samples, generator=g)
    seconds = time.perf_counter() - t
    arrays = {"mean": out.mean(), "std": out.std(), "samples": out.samples, "y": y}
    if out.log_weights is not None:
        arrays["log_weights"] = out.log_weights
    if x_true is not None:
        arrays["x_true"] = x_true
    attrs = dict(operator=args.operator, operator_args=op_kwargs, sampler=args.sampler, prior=args.prior,
                 sampler_args={k: v for k, v in sampler_kwargs.items() if k != "progress"}, samples=args.samples,
                 seed=args.seed, nfe=int(out.nfe),
                 seconds=round(seconds, 3), device=str(device), version=invdiff.__version__)
    if rank != 0:  # sharded particles: every rank holds the whole result; rank 0 writes it
        return 0
    save_hdf5(args.output, arrays, attrs)
    msg = f"wrote {args.output}: mean/std/samples {tuple(out.samples.shape)}, {out.nfe} NFE, {seconds:.1f} s"
    if x_true is not None:
        from invdiff.metrics import psnr

        msg += f", PSNR of the mean {float(psnr(out.mean(), x_true).mean()):.2f} dB"
    print(msg)
    return 0


def _particle_ranks(args) -> tuple[int, int]:
    """``(rank, world)`` for SMC particles sharded over ``torchrun`` ranks; ``(0, 1)`` in one process
    and for the files of ``--input-dir`` (sharded by file instead)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or getattr(args, "files_sharded", False):
        return 0, 1
    from invdiff.distributed import rank_world

    return rank_world()


def _json_object(flag: str, text: str) -> dict:
    """A JSON object from a command-line flag (NaN/Infinity are accepted by JSON here and rejected
    by the sampler's or operator's own validation, with its message)."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: expected a JSON object, got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {text!r}")
    return value


def _load_prior(name: str, device):
    """A shipped prior by name, or a ``.safetensors`` checkpoint path."""
    import invdiff
    from invdiff.diffusion.training import load_checkpoint

    return load_checkpoint(name, device=device) if name.endswith(".safetensors") else invdiff.load_prior(name, device=device)
