"""`invdiff bench operators`: time of A, A^T and A^T A per call against the natural floor.

For each operator at two image sizes (128^2 and 256^2; ``--quick``: 64^2 and 128^2) and for
the 3D volume operators (64^3; quick: 32^3), the median time per call (``torch.utils.benchmark``)
of ``A``, ``A_adjoint`` and ``A_adjoint_A`` on a batch of one signal, and the same for the floor
measured in the same run on the same data:

- MRI: the bare ``torch.fft.fft2`` / ``ifft2`` calls (complex input, ortho norm; one per coil);
- blur: the bare ``torch.fft.rfft2`` + ``irfft2`` of the (padded) image;
- CT: deepinv's ``Tomography`` on the same geometry (its default, exact autograd adjoint);
- volumes: the 2D floor applied to all slices at once (FFT for MRI, deepinv for CT).

Targets: ratio <= 1.2 for MRI and blur, <= 1.0 for CT. For MRI the table also gives the ratio
to a floor that includes the layout change that deepinv's two-real-channel convention forces
(``invdiff.operators.complex``: ``torch.complex`` in, ``view_as_real`` out), and, for MRI and blur, deepinv's own operator
(``deepinv A^TA ms``). Times are minima over many short samples taken in alternation with
the floor (robust to other processes on a shared machine).
"""
from __future__ import annotations

import torch

from invdiff import operators
from invdiff.operators.complex import to_channels, to_complex


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _times(fns, budget: float, device="cpu") -> list[float]:
    """Seconds per call of each callable: the minimum over many short samples taken in
    alternation (ours, floor, ours, floor, ...). On a shared machine other processes only ever
    add time, and alternating exposes every callable to the same bursts of load."""
    import time

    for f in fns:  # warm-up, and the number of calls per sample (~2 ms)
        f()
    _sync(device)
    reps = []
    for f in fns:
        t0 = time.perf_counter()
        f()
        _sync(device)
        reps.append(max(1, int(2e-3 / max(time.perf_counter() - t0, 1e-7))))
    best = [float("inf")] * len(fns)
    t_end = time.perf_counter() + budget
    rounds = 0
    while rounds < 5 or (time.perf_counter() < t_end and rounds < 500):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                f()
            _sync(device)
            best[i] = min(best[i], (time.perf_counter() - t0) / reps[i])
        rounds += 1
    return best


def _fft_floor(shape, device, real: bool):
    """(A, A^T, A^T A) callables of bare FFTs on data of ``shape``."""
    if real:
        x = torch.randn(shape, device=device)
        s = shape[-2:]
        fwd = lambda: torch.fft.irfft2(torch.fft.rfft2(x), s=s)  # noqa: E731
        return fwd, fwd, lambda: torch.fft.irfft2(torch.fft.rfft2(torch.fft.irfft2(torch.fft.rfft2(x), s=s)), s=s)
    z = torch.randn(shape, dtype=torch.complex64, device=device)
    return (
        lambda: torch.fft.fft2(z, norm="ortho"),
        lambda: torch.fft.ifft2(z, norm="ortho"),
        lambda: torch.fft.ifft2(torch.fft.fft2(z, norm="ortho"), norm="ortho"),
    )


def _deepinv_ct(op, device):
    from deepinv.physics import Tomography

    if op.fan_beam:
        kw = dict(fan_beam=True, fan_parameters=dict(
            pixel_spacing=1.0, source_radius=op.source_distance, detector_radius=op.detector_distance,
            n_detector_pixels=op.n_detectors, detector_spacing=op.detector_spacing))
        angles = op.angles.cpu() + 90.0
    else:
        kw, angles = {}, op.angles.cpu()
    T = Tomography(angles=angles.to(device), img_width=op.size, normalize=False, device=device, **kw)
    x = torch.randn(1, *op.x_shape, device=device)
    y = T.A(x)
    return (lambda: T.A(x)), (lambda: T.A_adjoint(y)), (lambda: T.A_adjoint_A(x))


def _layout_floor(op, device):
    """MRI floor including the unavoidable layout change of deepinv's convention: two real
    channels (B, 2, ...) to complex and back, around the bare FFTs."""
    x = torch.randn(1, *op.x_shape, device=device)
    y = op.A(x)
    multi = len(op.y_shape) == 4
    if multi:
        maps = op.coil_maps[0]
    def fwd():
        z = to_complex(x)
        if multi:
            z = maps * z[:, None]
        return to_channels(torch.fft.fft2(z, norm="ortho"))
    def adj():
        z = torch.fft.ifft2(to_complex(y), norm="ortho")
        if multi:
            z = (maps.conj() * z).sum(1)
        return to_channels(z)
    return fwd, adj


def _deepinv_same(name, op, device):
    """deepinv's own operator with the same data, for MRI and circular blur (A^T A only)."""
    import deepinv.physics as P

    x = torch.randn(1, *op.x_shape, device=device)
    if name == "mri-4x":
        D = P.MRI(mask=op.mask[0, 0], device=device)
    elif name == "mri-multicoil-8x":
        D = P.MultiCoilMRI(mask=op.mask[0, 0], coil_maps=op.coil_maps[0], img_size=op.x_shape[1:], device=device)
    elif name.startswith("blur"):
        D = P.BlurFFT(img_size=op.x_shape, filter=op.filter, device=device)
    else:
        return None
    return lambda: D.A_adjoint_A(x)


def _floor(name, op, device):
    if name.startswith("ct"):
        return "deepinv Tomography", _deepinv_ct(op, device)
    if name == "mri-4x":
        return "torch.fft", _fft_floor((1, *op.x_shape[1:]), device, real=False)
    if name == "mri-multicoil-8x":
        return "torch.fft", _fft_floor((1, op.n_coils, *op.x_shape[1:]), device, real=False)
    if name.startswith("blur"):
        return "torch.fft", _fft_floor((1, *op.x_shape[:1], *op.fft_shape), device, real=True)
    if name == "volume-mri":
        return "torch.fft (all slices)", _fft_floor((op.depth, *op.slice_shape[1:]), device, real=False)
    if name == "volume-ct":
        from deepinv.physics import Tomography

        T = Tomography(angles=op.op2d.angles.cpu().to(device), img_width=op.op2d.size, normalize=False, device=device)
        xs = torch.randn(op.depth, *op.slice_shape, device=device)
        ys = T.A(xs)
        return "deepinv Tomography (all slices)", ((lambda: T.A(xs)), (lambda: T.A_adjoint(ys)), (lambda: T.A_adjoint_A(xs)))
    return "", None


def run(out_dir: str, quick: bool, device: str) -> list[dict]:
    """Benchmark rows: one per (operator, size).

    ``INVDIFF_BENCH_THREADS=n`` sets torch's CPU threads first (on a loaded machine, 1 thread
    avoids the stalls of threads waiting for each other; the table header states the count).
    """
    import os

    if os.environ.get("INVDIFF_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["INVDIFF_BENCH_THREADS"]))
    sizes = (64, 128) if quick else (128, 256)
    vol = 32 if quick else 64
    t_min = 1.0 if quick else 3.0  # seconds of alternating samples per group
    cases = [(n, dict(size=s)) for n in ("mri-4x", "mri-multicoil-8x", "blur-gaussian", "blur-motion",
                                         "ct-sparse-view", "ct-limited-angle", "ct-fan") for s in sizes]
    cases += [("blur-gaussian", dict(size=s, padding="reflect")) for s in sizes]
    cases += [("volume-mri", dict(size=vol)), ("volume-ct", dict(size=vol))]
    rows = []
    for name, kw in cases:
        op = operators.make(name, **kw).to(device)
        x = torch.randn(1, *op.x_shape, device=device)
        y = op.A(x)
        floor_name, fl = _floor(name, op, device)
        fns = [lambda: op.A(x), lambda: op.A_adjoint(y), lambda: op.A_adjoint_A(x)]
        t = _times(fns + (list(fl) if fl is not None else []), t_min, device)
        ours, fl_t = t[:3], t[3:]
        row = {
            "operator": name + ("" if "padding" not in kw else f" ({kw['padding']})"),
            "x_shape": "x".join(map(str, op.x_shape)),
            "A ms": 1e3 * ours[0], "A^T ms": 1e3 * ours[1], "A^TA ms": 1e3 * ours[2],
            "floor": floor_name,
        }
        if fl_t:
            row.update({"floor A ms": 1e3 * fl_t[0], "floor A^T ms": 1e3 * fl_t[1], "floor A^TA ms": 1e3 * fl_t[2],
                        "ratio A": ours[0] / fl_t[0], "ratio A^T": ours[1] / fl_t[1], "ratio A^TA": ours[2] / fl_t[2]})
        if name.startswith("mri"):
            lf = _times(list(_layout_floor(op, device)), t_min, device)
            row.update({"ratio A vs fft+layout": ours[0] / lf[0], "ratio A^T vs fft+layout": ours[1] / lf[1]})
        same = _deepinv_same(name, op, device) if "padding" not in kw else None
        if same is not None:
            td = _times([same, fns[2]], t_min, device)
            row.update({"deepinv A^TA ms": 1e3 * td[0], "A^TA vs deepinv": td[1] / td[0]})
        rows.append(row)
    return rows
