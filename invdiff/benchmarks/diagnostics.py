"""`invdiff bench diagnostics`: hallucination maps and the out-of-domain warning, measured.

- :func:`hallucination_table` (``hallucination``): 64 x 64 sparse-view CT (the demo's operator) of
  held-out phantoms, DPS with the demo's settings recording the variance of :math:`\\hat x_0`
  over the last quarter of its steps (:func:`invdiff.hallucination.attach_x0_variance`, no extra
  network call). The flag threshold is the 99th percentile of :math:`\\sqrt V` over pixels of
  in-domain phantoms (calibration images, disjoint from the test images). Test images carry a
  feature the prior rarely saw: a thin bright bar (1 x 8 pixels, +0.4). Reported: hallucinated
  structures (connected components of ``|recon - truth| > 0.1`` with at least 3 pixels), how many
  a flag touches (caught), whether the true bar is flagged, and pixel flag rates on and off
  the errors.
- :func:`ood_table` (``ood``): :class:`invdiff.diagnostics.OODDetector` fitted on 8 in-domain
  phantoms (validation seed), scored on 8 held-out phantoms, scikit-image's camera and
  Shepp-Logan at contrasts 0.5, 1 and 2 (resized to 64 x 64, in [0, 1] times the contrast), with
  DDS reconstructions (its defaults) for the consistency statistic.
"""
from __future__ import annotations

import time

import torch

__all__ = ["run", "hallucination_table", "ood_table", "with_bar"]


def with_bar(x: torch.Tensor, generator: torch.Generator, value: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with a 1 x 8 bright bar at a random place inside the central region, and the bar masks."""
    x = x.clone()
    mask = torch.zeros_like(x, dtype=torch.bool)
    for b in range(x.shape[0]):
        r = int(torch.randint(20, 44, (1,), generator=generator))
        c = int(torch.randint(18, 38, (1,), generator=generator))
        mask[b, 0, r, c:c + 8] = True
    return (x + value * mask).clamp(0, 1.5), mask


def _dps(prior, steps: int = 100):
    from invdiff.diffusion.schedules import karras_sigmas
    from invdiff.hallucination import attach_x0_variance
    from invdiff.samplers import DPS

    return attach_x0_variance(DPS(prior, sigmas=karras_sigmas(steps, 0.002, 80.0), zeta=2.0 * 100 / steps,
                                  progress=False), 0.25)


def hallucination_table(n_cal: int = 4, n_test: int = 4, steps: int = 100) -> list[dict]:
    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import ct_phantoms, test_set
    from invdiff.hallucination import flag_map, score_structures

    prior = invdiff.load_prior("ct-phantom-64")
    physics = operators.make("ct-sparse-view", size=64, views=30, sigma=0.01, generator=torch.Generator().manual_seed(0))
    cal = ct_phantoms(n_cal, size=64, generator=torch.Generator().manual_seed(999))
    test, bars = with_bar(test_set("ct-phantom", n_test, 64), torch.Generator().manual_seed(5))
    x = torch.cat([cal, test])
    t0 = time.perf_counter()
    out = _dps(prior, steps).sample(physics(x), physics, n_samples=1, generator=torch.Generator().manual_seed(0))
    wall = time.perf_counter() - t0
    sd = out.trace["x0_var"][0].clamp_min(0).sqrt()  # (B, 1, 64, 64)
    thr = float(torch.quantile(sd[:n_cal].flatten().double(), 0.99))
    rec = out.samples[0]
    rows = []
    for b in range(n_cal + n_test):
        flags = flag_map(out.trace["x0_var"][0, b, 0], thr)
        mask = bars[b - n_cal, 0] if b >= n_cal else None
        row = score_structures(rec[b, 0], x[b, 0], flags, mask)
        rows.append({"image": b, "set": "calibration (in-domain)" if b < n_cal else "test (with bar)",
                     "threshold_sd": round(thr, 4), **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}})
    tot = {k: sum(r.get(k, 0) for r in rows[n_cal:]) for k in ("hallucinated", "caught", "true_structures", "true_flagged")}
    rows.append({"image": "all test", "set": f"DPS {steps} steps, {wall:.0f} s", **tot})
    return rows


def _ood_images(size: int = 64) -> dict[str, torch.Tensor]:
    from skimage import data
    from skimage.transform import resize

    cam = resize(data.camera().astype("float64") / 255.0, (size, size), anti_aliasing=True)
    sl = resize(data.shepp_logan_phantom(), (size, size), anti_aliasing=True)
    out = {"camera": torch.tensor(cam, dtype=torch.float32)[None, None]}
    for c in (0.5, 1.0, 2.0):
        out[f"shepp-logan x{c:g}"] = c * torch.tensor(sl, dtype=torch.float32)[None, None]
    return out


def ood_table(n: int = 8) -> list[dict]:
    import invdiff
    import invdiff.operators as operators
    from invdiff.datasets.phantoms import ct_phantoms, test_set
    from invdiff.diagnostics import OODDetector
    from invdiff.samplers import make

    prior = invdiff.load_prior("ct-phantom-64")
    physics = operators.make("ct-sparse-view", size=64, views=30, sigma=0.01, generator=torch.Generator().manual_seed(0))
    dds = make("dds", prior, progress=False)

    def recon(y):
        return dds.sample(y, physics, n_samples=1, generator=torch.Generator().manual_seed(0)).mean()

    g = torch.Generator().manual_seed(1)
    cal = ct_phantoms(n, size=64, generator=torch.Generator().manual_seed(999))
    y_cal = physics(cal)
    det = OODDetector(prior).fit(y_cal, physics, recon(y_cal), generator=g)
    sets = {"held-out phantoms": test_set("ct-phantom", n, 64), **_ood_images()}
    rows = []
    for name, x in sets.items():
        y = physics(x)
        res = det.score(y, physics, recon(y), generator=g)
        for b in range(x.shape[0]):
            rows.append({"data": name, "image": b, "residual": round(float(res["residual"][b]), 4),
                         "z_residual": round(float(res["z_residual"][b]), 1),
                         "consistency": round(float(res["consistency"][b]), 3),
                         "z_consistency": round(float(res["z_consistency"][b]), 1),
                         "score": round(float(res["score"][b]), 1), "flag": bool(res["flag"][b])})
    return rows


def run(out_dir: str, quick: bool, device: str) -> dict[str, list[dict]]:
    return {"hallucination": hallucination_table(2 if quick else 4, 2 if quick else 4, 50 if quick else 100),
            "ood": ood_table(4 if quick else 8)}
