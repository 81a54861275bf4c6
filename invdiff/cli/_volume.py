"""`invdiff reconstruct` for volumes: a 2D prior applied slice by slice to a 3D operator.

Used when the operator is a volume operator (``volume-*``) or the input is NIfTI. The input is
the volume to simulate measurements from (NIfTI ``.nii``/``.nii.gz``, HDF5 ``(X, Y, Z)`` or
``.npy``, read by :func:`invdiff.utils.nifti.read_volume`; complex data become two channels);
the operator gets the input's depth and in-plane size unless ``--operator-args`` sets them. The
2D prior is wrapped as :class:`invdiff.diffusion.slicewise.SliceWisePrior` (``diffusion-mbir``
wraps it itself). Output: NIfTI (the mean, and the posterior std beside it as
``<name>_std.nii.gz``) with the input's affine and voxel size, or HDF5 (mean, std, samples, y,
with ``affine`` and ``voxel_size`` attributes).
"""
from __future__ import annotations

import time
from pathlib import Path


def is_volume(operator: str, input_path: str | None) -> bool:
    from invdiff.utils.nifti import NIFTI_SUFFIXES

    return operator.startswith("volume-") or (input_path is not None and str(input_path).lower().endswith(NIFTI_SUFFIXES))


def _std_path(output: Path) -> Path:
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return output.with_name(name[: -len(suffix)] + "_std" + suffix)
    return output.with_name(output.stem + "_std" + output.suffix)


def run_volume(args, op_kwargs: dict, sampler_kwargs: dict, load_prior) -> int:
    """Reconstruct one volume (see the module docstring); ``load_prior(name, device)`` loads the 2D prior."""
    import torch

    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.loaders import save_hdf5
    from invdiff.diffusion.slicewise import SliceWisePrior
    from invdiff.samplers import make
    from invdiff.utils.nifti import NIFTI_SUFFIXES, read_volume, write_volume
    from invdiff.utils.validate import prior_x_shape

    device = torch.device(args.device)
    x, meta = read_volume(args.input)  # (1, C, D, H, W)
    op_kwargs.setdefault("depth", int(x.shape[2]))
    if x.shape[-1] == x.shape[-2]:
        op_kwargs.setdefault("size", int(x.shape[-1]))
    physics = operators.make(args.operator, device=device, generator=torch.Generator(device=device).manual_seed(args.seed),
                             **op_kwargs)
    if tuple(physics.x_shape) != tuple(x.shape[1:]):
        raise ValueError(f"--input {args.input}: a volume of shape {tuple(x.shape[1:])} (C, D, H, W), the operator "
                         f"{args.operator} expects {tuple(physics.x_shape)}")
    prior2d = load_prior(args.prior, device)
    slice_shape = (int(x.shape[1]), int(x.shape[3]), int(x.shape[4]))
    shape = prior_x_shape(prior2d)
    if shape is not None and tuple(shape) != slice_shape:
        raise ValueError(f"prior {args.prior} models slices of shape {tuple(shape)}, the volume's slices have shape {slice_shape}")
    prior = prior2d if args.sampler == "diffusion-mbir" else SliceWisePrior(prior2d, depth=int(x.shape[2]))
    sampler = make(args.sampler, prior, **sampler_kwargs)
    x = x.to(device)
    y = physics(x)
    t = time.perf_counter()
    out = sampler.sample(y, physics, n_samples=args.samples, generator=torch.Generator(device="cpu").manual_seed(args.seed))
    seconds = time.perf_counter() - t
    mean, std = out.mean(), out.std()
    output = Path(args.output)
    if str(output).lower().endswith(NIFTI_SUFFIXES):
        write_volume(output, mean, meta)
        write_volume(_std_path(output), std, meta)
        written = f"{output} (mean) and {_std_path(output)} (std)"
    else:
        attrs = dict(operator=args.operator, operator_args=op_kwargs, sampler=args.sampler, prior=args.prior,
                     sampler_args={k: v for k, v in sampler_kwargs.items() if k != "progress"}, samples=args.samples,
                     seed=args.seed, nfe=int(out.nfe), seconds=round(seconds, 3), device=str(device),
                     version=invdiff.__version__, affine=meta["affine"].tolist(), voxel_size=list(meta["voxel_size"]),
                     source=str(args.input))
        save_hdf5(output, {"mean": mean, "std": std, "samples": out.samples, "y": y, "x_true": x}, attrs)
        written = str(output)
    from invdiff.metrics import psnr

    print(f"wrote {written}: volume {tuple(mean.shape[1:])}, {out.nfe} NFE, {seconds:.1f} s, "
          f"PSNR of the mean against the input {float(psnr(mean, x).mean()):.2f} dB")
    return 0
