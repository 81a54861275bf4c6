r"""`invdiff bench mbir3d`: 3D inverse problems with a 2D diffusion prior (issue 13).

Tasks (the held-out 64^3 phantom of :func:`invdiff.datasets.phantoms3d.test_volumes`, or its
central slab of ``depth`` slices, isotropic voxels; 64 x 64 axial slices, the training resolution
of the shipped 2D priors ``ct-phantom-64`` / ``mri-phantom-64``):

- ``ct-8view``: 8-view parallel-beam CT on every axial slice (``volume-ct``), noise 0.01;
- ``ct-limited``: 45 views on [0, 90) degrees per slice (``volume-ct-limited-angle``), noise 0.01;
- ``mri-4x`` / ``mri-8x``: single-coil Cartesian MRI with a different 1D Gaussian mask per slice
  (``volume-mri-slices``), noise 0.01 per real channel; metrics on the magnitude.

Methods: the classical baseline (FBP / zero-filled), 3D TV by ADMM (all axes, :math:`\lambda`
chosen on a validation volume), the 2D prior slice by slice without z-coupling (DDS on the
slice-wise prior: CG on the block-diagonal volume operator, same steps as DiffusionMBIR; and
DiffusionMBIR with ``lam = 0``, i.e. the same sampler settings without the z-TV term, which isolates
the effect of the z-coupling),
DiffusionMBIR (slice-wise prior + ADMM z-TV), and DDS without and with the z-TV hook at 1/10 of
the steps. Every diffusion sampler runs with its defaults (only ``steps`` and DiffusionMBIR's
``lam``/``rho`` of ``SETTINGS`` are set).

Metrics: PSNR and SSIM averaged over the axial, coronal and sagittal slices and PSNR of the
volume (values clipped to the data range [0, 1]); wall time; NFE (volume-level denoiser calls;
2D network evaluations = NFE x slices); peak memory above the start of each method (resident
set sampled every 5 ms on CPU, ``torch.cuda.max_memory_allocated`` on GPU). A figure of the
three central planes goes to ``<out>/mbir3d.png``.
"""
from __future__ import annotations

import threading
import time

import torch

#: (depth, DiffusionMBIR steps, DDS steps, TV iterations) of the full and the quick run
FULL = dict(depth=64, steps=50, dds_steps=5, tv_iters=150)
QUICK = dict(depth=8, steps=6, dds_steps=2, tv_iters=10)
SIGMA_Y = 0.01
#: lambda of 3D TV and of DiffusionMBIR, rho: tuned on the validation volume (seed 999, central
#: 16 slices) at 30 steps, see docs/benchmarks/mbir3d.md
SETTINGS = {
    "ct-8view": dict(tv_lam=0.001, tv_rho=0.01, mbir_lam=0.001, rho=0.03),
    "ct-limited": dict(tv_lam=0.001, tv_rho=0.01, mbir_lam=0.001, rho=0.03),
    "mri-4x": dict(tv_lam=0.0003, tv_rho=0.01, mbir_lam=0.001, rho=0.03),
    "mri-8x": dict(tv_lam=0.0003, tv_rho=0.01, mbir_lam=0.001, rho=0.03),
}


def make_task(name: str, depth: int, device="cpu", seed: int = 1):
    """``(physics, prior name, family)`` of task ``name`` on ``(64, 64, depth)`` volumes."""
    from invdiff import operators

    g = torch.Generator(device=device).manual_seed(seed)
    common = dict(size=64, depth=depth, sigma=SIGMA_Y, generator=g, device=device)
    if name == "ct-8view":
        return operators.make("volume-ct", views=8, **common), "ct-phantom-64", "ct"
    if name == "ct-limited":
        return operators.make("volume-ct-limited-angle", views=45, max_angle=90.0, **common), "ct-phantom-64", "ct"
    if name in ("mri-4x", "mri-8x"):
        acc = int(name[4])
        return operators.make("volume-mri-slices", acceleration=acc, **common), "mri-phantom-64", "mri"
    raise ValueError(f"unknown task {name!r}; expected one of {sorted(SETTINGS)}")


def _image(x: torch.Tensor, family: str) -> torch.Tensor:
    """What is scored: the volume (CT) or its magnitude (MRI), ``(B, 1, D, H, W)``, clipped to [0, 1]."""
    if family == "mri":
        x = x.pow(2).sum(1, keepdim=True).sqrt()
    return x.clamp(0, 1)


def plane_metrics(x_hat: torch.Tensor, x: torch.Tensor, family: str) -> dict:
    """PSNR / SSIM averaged over the slices of each plane, and the volume PSNR (first volume)."""
    from invdiff.metrics import psnr, ssim

    a, b = _image(x_hat, family)[0, 0], _image(x, family)[0, 0]
    out = {"psnr_vol": float(psnr(a[None], b[None]))}
    for plane, axis in (("axial", 0), ("coronal", 1), ("sagittal", 2)):
        sa, sb = a.movedim(axis, 0)[:, None], b.movedim(axis, 0)[:, None]
        out[f"psnr_{plane}"] = float(psnr(sa, sb).mean())
        out[f"ssim_{plane}"] = float(ssim(sa.cpu(), sb.cpu()).mean())
    return out


def _malloc_returns_memory() -> None:
    """glibc: serve every allocation above 64 KiB by mmap (fixed threshold) and trim the heap, so
    that freed tensors leave the resident set and the RSS follows the live memory."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS peak is an upper bound
        pass


class PeakMemory:
    """Peak memory (MiB) above the level at entry: CUDA allocator peak, or the sampled RSS on CPU
    (every 5 ms; glibc set to return freed memory, :func:`_malloc_returns_memory`)."""

    def __init__(self, device) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.peak = 0.0
        if not self.cuda:
            _malloc_returns_memory()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self._rss()
        self._max, self._stop = self.base, threading.Event()

        def poll():
            while not self._stop.is_set():
                self._max = max(self._max, self._rss())
                time.sleep(0.005)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = (max(self._max, self._rss()) - self.base) / 2**20
        return False


def methods(prior, cfg: dict, settings: dict):
    """``name -> (callable(y, physics, generator) -> volume, nfe)`` of the compared methods."""
    from invdiff.diffusion.slicewise import SliceWisePrior
    from invdiff.samplers.admm_tv import tv_reconstruct
    from invdiff.samplers.dds import DDS
    from invdiff.samplers.diffusion_mbir import DiffusionMBIR

    D = SliceWisePrior(prior, chunk=64)
    lam, rho, steps, fast = settings["mbir_lam"], settings["rho"], cfg["steps"], cfg["dds_steps"]

    def sampler(s):
        return lambda y, op, g: s.sample(y, op, generator=g).samples[0]

    return {
        "baseline (FBP / zero-filled)": (lambda y, op, g: op.baseline(y), 0),
        "3D TV (ADMM)": (lambda y, op, g: tv_reconstruct(y, op, lam=settings["tv_lam"], rho=settings["tv_rho"], axes=(2, 3, 4),
                                                         iters=cfg["tv_iters"])[0], 0),
        f"2D prior per slice (DDS, {steps} steps)": (sampler(DDS(D, steps=steps, progress=False)), steps),
        f"2D prior per slice (DiffusionMBIR, lam 0, {steps} steps)": (sampler(DiffusionMBIR(D, steps=steps, lam=0.0, rho=rho,
                                                                                   progress=False)), steps),
        f"DiffusionMBIR ({steps} steps)": (sampler(DiffusionMBIR(D, steps=steps, lam=lam, rho=rho, progress=False)), steps),
        f"DDS ({fast} steps)": (sampler(DDS(D, steps=fast, progress=False)), fast),
        f"DDS + z-TV ({fast} steps)": (sampler(DiffusionMBIR(D, steps=fast, lam=lam, rho=rho, progress=False)), fast),
    }


def run_task(name: str, cfg: dict, device="cpu", store: dict | None = None, only: str | None = None) -> list[dict]:
    """The rows of task ``name`` (the methods whose name contains ``only``, all when ``None``)."""
    import invdiff
    from invdiff.datasets.phantoms3d import test_volumes

    op, prior_name, family = make_task(name, cfg["depth"], device)
    x = test_volumes(family, 1, size=64, depth=64, device=device)
    lo = (64 - cfg["depth"]) // 2
    x = x[:, :, lo : lo + cfg["depth"]].contiguous()  # the central slab (all of it at depth 64)
    y = op(x)
    prior = invdiff.load_prior(prior_name, device=device)
    rows = []
    for method, (fn, nfe) in methods(prior, cfg, SETTINGS[name]).items():
        if only is not None and only not in method:
            continue
        t0 = time.perf_counter()
        with torch.no_grad(), PeakMemory(device) as mem:
            x_hat = fn(y, op, torch.Generator(device=device).manual_seed(0))
        wall = time.perf_counter() - t0
        rows.append({"task": name, "method": method, **plane_metrics(x_hat, x, family), "nfe": nfe,
                     "net_evals_2d": nfe * cfg["depth"], "wall_s": wall, "peak_mib": mem.peak})
        print(rows[-1], flush=True)
        if store is not None:
            store[(name, method)] = _image(x_hat, family)[0, 0].cpu()
            store[(name, "truth")] = _image(x, family)[0, 0].cpu()
    return rows


def figure(store: dict, tasks, path) -> None:
    """Central axial, coronal and sagittal planes of the truth and each method, one block per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for task in tasks:
        names = ["truth"] + [m for (t, m) in store if t == task and m != "truth"]
        fig, axes = plt.subplots(3, len(names), figsize=(2.2 * len(names), 6.6), squeeze=False)
        for j, m in enumerate(names):
            v = store[(task, m)]
            for i, sl in enumerate((v[v.shape[0] // 2], v[:, v.shape[1] // 2], v[:, :, v.shape[2] // 2])):
                axes[i, j].imshow(sl, cmap="gray", vmin=0, vmax=1, aspect="auto")
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
            axes[0, j].set_title(m, fontsize=7)
        for i, plane in enumerate(("axial", "coronal", "sagittal")):
            axes[i, 0].set_ylabel(plane)
        fig.tight_layout()
        fig.savefig(str(path).replace(".png", f"-{task}.png"), dpi=90)
        plt.close(fig)


def memory_rows(cfg: dict, device="cpu") -> list[dict]:
    """Peak memory and time of one slice-wise denoiser call on a ``(1, 1, depth, 64, 64)`` volume vs ``chunk``."""
    import invdiff
    from invdiff.diffusion.slicewise import SliceWisePrior

    prior = invdiff.load_prior("ct-phantom-64", device=device)
    x = torch.randn(1, 1, cfg["depth"], 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for chunk in (4, 16, 64):
        D = SliceWisePrior(prior, chunk=chunk)
        t0 = time.perf_counter()
        with torch.no_grad(), PeakMemory(device) as mem:
            D(x, 1.0)
        rows.append({"depth": cfg["depth"], "chunk": chunk, "wall_s": time.perf_counter() - t0, "peak_mib": mem.peak})
    return rows


def run(out_dir: str = "results/bench", quick: bool = False, device: str = "cpu", tasks=None,
        only: str | None = None) -> dict:
    from pathlib import Path

    torch.manual_seed(0)
    cfg = QUICK if quick else FULL
    store: dict = {}
    rows = []
    tasks = list(SETTINGS) if tasks is None else list(tasks)
    for name in tasks:
        rows += run_task(name, cfg, device, store, only)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if only is None:  # a partial run leaves the full run's figures alone
        figure(store, tasks, Path(out_dir) / "mbir3d.png")
    out = {"mbir3d": rows}
    if "ct-8view" in tasks:
        out["mbir3d-memory"] = memory_rows(cfg, device)
    return out


if __name__ == "__main__":  # python -m invdiff.benchmarks.mbir3d OUT [--quick] [--only=SUBSTRING] TASK...
    import sys

    from invdiff.benchmarks.table import write_table

    torch.set_num_threads(1)
    args = [a for a in sys.argv[2:] if a != "--quick" and not a.startswith("--only=")]
    only = next((a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--only=")), None)
    out = run(sys.argv[1], quick="--quick" in sys.argv, tasks=args or None, only=only)
    tag = "-".join(args) if args else "all"
    tag += "-only" if only else ""
    for name, rows in out.items():
        print(write_table(rows, sys.argv[1], f"{name}-{tag}"))
