"""``invdiff bench gpu``: sampler step time against bare network evaluation, and SMC particle scaling, on CUDA.

Skips cleanly (a message, no table) where no CUDA GPU is available.

Tables (``results/bench``):

- ``gpu_steps``: wall time per step of DPS, RED-Diff, DDS, the SMC ensemble and twisted SMC on
  256 x 256 sparse-view CT (30 views, sigma 0.01) with a U-Net of the shipped ``ct-phantom-64``
  architecture (fully convolutional, run at 256^2: a timing, not a reconstruction), beside the
  bound of bare network evaluation at the same batch: forward only (``bare_fwd_ms``), and
  forward + vector-Jacobian product (``bare_vjp_ms``) for the samplers that differentiate
  through the network (DPS, twisted SMC). ``efficiency = bound / step`` (target >= 0.9), in
  float32 and with bf16 autocast of the network only (:class:`invdiff.diffusion.fast.FastDenoiser`).
- ``gpu_smc_particles``: SMC ensemble time per step and particles per second for
  N = 64, 128, 256, 512, 1024 (target: N = 1024 costs at most 2x N = 64 per step).

``--quick``: 64^2, 3 steps, N in (64, 128). :func:`measure` runs the same on any device
(the tests run it on the CPU at 32^2).
"""
from __future__ import annotations

import time

import torch

NEEDS_VJP = {"dps", "twisted-smc"}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, reps: int = 3, warmup: bool = True) -> float:
    """Median wall time of ``fn()`` in seconds (after one warm-up call)."""
    if warmup:
        fn()
        _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def _setup(size: int, device, autocast: str | None, compile: bool):
    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import test_set
    from invdiff.diffusion.fast import FastDenoiser

    prior = invdiff.load_prior("ct-phantom-64", device=device)
    prior.x_shape = (1, size, size)  # fully convolutional: run at another size on purpose (timing only)
    D = FastDenoiser(prior, autocast=autocast, compile=compile)
    physics = operators.make("ct-sparse-view", size=size, views=30, sigma=0.01, device=device,
                             generator=torch.Generator(device=device).manual_seed(0))
    x = test_set("ct-phantom", 1, size, device=device)
    return D, physics, physics(x)


def _bare(D, batch: int, size: int, device, vjp: bool, reps: int = 3) -> float:
    x = torch.randn(batch, 1, size, size, device=device)
    sigma = torch.full((batch,), 1.0, device=device)

    def fwd():
        with torch.no_grad():
            D(x, sigma)

    def fwd_vjp():
        xr = x.detach().requires_grad_(True)
        out = D(xr, sigma)
        torch.autograd.grad(out, xr, torch.ones_like(out))

    return _timed(fwd_vjp if vjp else fwd, device, reps)


def measure(device="cuda", size: int = 256, steps: int = 10, n_samples: int = 4,
            samplers=("dps", "red-diff", "dds", "smc", "twisted-smc"), particles=(64, 128, 256, 512, 1024),
            precisions=(None, "bf16"), compile: bool = False, reps: int = 3) -> dict[str, list[dict]]:
    """The two tables on ``device`` (see the module docstring); ``reps`` timed repetitions of the
    bare network (median; the samplers run once after a warm-up run, or ``reps=1``: no warm-up)."""
    warm = reps > 1
    from invdiff.samplers import make

    rows, scan = [], []
    D, physics, y = _setup(size, device, None, compile)
    for prec in precisions:
        D.autocast = prec
        bare = {v: _bare(D, n_samples, size, device, v, reps) for v in (False, True)}
        for name in samplers:
            row = dict(sampler=name, size=size, batch=n_samples, precision=prec or "fp32", steps=steps)
            try:
                s = make(name, D, steps=steps, progress=False)
                g = torch.Generator(device=device).manual_seed(0)
                t = _timed(lambda: s.sample(y, physics, n_samples=n_samples, generator=g), device, reps=1, warmup=warm)
                bound = bare[name in NEEDS_VJP]
                row.update(step_ms=round(1e3 * t / steps, 2), bare_fwd_ms=round(1e3 * bare[False], 2),
                           bare_vjp_ms=round(1e3 * bare[True], 2), efficiency=round(bound / (t / steps), 3),
                           target=0.9, met=bound / (t / steps) >= 0.9)
            except Exception as exc:  # noqa: BLE001 - one failing sampler must not hide the others' numbers
                row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
            rows.append(row)
    base = None
    for n in particles:
        row = dict(sampler="smc", size=size, particles=n, steps=steps)
        try:
            s = make("smc", D, steps=steps, progress=False)
            g = torch.Generator(device=device).manual_seed(0)
            t = _timed(lambda: s.sample(y, physics, n_samples=n, generator=g), device, reps=1, warmup=warm) / steps
            base = t if base is None else base
            row.update(step_ms=round(1e3 * t, 2), particles_per_s=round(n / t, 1), cost_vs_first=round(t / base, 2),
                       target="<= 2 at N=1024", met=(t / base <= 2.0) if n == 1024 else None)
        except Exception as exc:  # noqa: BLE001
            row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
        scan.append(row)
    return {"gpu_steps": rows, "gpu_smc_particles": scan}


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    """The benchmark on CUDA (``--device cuda:N`` picks the GPU); an empty result without one."""
    if not torch.cuda.is_available():
        print("invdiff bench gpu: skipped: no CUDA GPU here (torch.cuda.is_available() is False); "
              "run it on a machine with a GPU to measure the tables")
        return {}
    dev = device if str(device).startswith("cuda") else "cuda"
    torch.backends.cudnn.benchmark = True
    if quick:
        return measure(dev, size=64, steps=3, particles=(64, 128))
    return measure(dev)
