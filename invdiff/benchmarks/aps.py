r"""``invdiff bench aps``: discrete posterior samplers (APS, SVDD, masked SMC, SGDD, unguided) against
exact posteriors and on digits and phantom tasks, with continuous DPS on the same data as the reference.

Tables
------
``aps_enumeration``
    Factorised-mixture priors (K = 4 components, L = 8 tokens, V = 3 levels, codes -1/0/1),
    ``y = A x + 0.3 n`` with a 3x8 Gaussian ``A``; the exact posterior over all 6,561 sequences;
    total variation of each sampler's draws to it at each NFE, and the floor of as many exact
    posterior draws (1,024 per cell). SMC pools 64-particle runs (weighted).
``aps_oracle``
    The empirical-set oracle of the 1,497 training digits (17 levels): a training digit
    (number 3) measured by each task; the exact posterior over the set; TV of 100 draws per sampler and
    the fraction of draws that are members of the set at all.
``aps_tasks``
    60 held-out test digits (``quick``: 30), one draw per measurement; PSNR (dB, mean and
    standard error) and measurement RMSE :math:`\|\mathcal A(\hat x) - y\|/\sqrt m` (the noise
    is 0.05) per task, sampler and NFE. Discrete samplers use the shipped ``digits-mdlm``
    prior; DPS uses the Gaussian kernel density of the training digits (:func:`kde_prior`)
    with its step size chosen per task and NFE on 40 other test digits (grid 0.25-4 times
    32 / NFE), also at NFE 100 as a reference beyond the discrete budget. NFE counts network
    (or denoiser) evaluations per draw; SVDD spends ``candidates`` per step, SMC ``particles``.
``aps_phantoms``
    The same four tasks on 16 held-out 32x32 CT phantoms (``quick``: 6), noise 0.05; the
    discrete samplers (SGDD included) on the shipped ``phantom32-mdlm`` (16 levels), DPS on the
    shipped ``ct-phantom-64`` through 2x2 pooling (:func:`phantom_task_rows`).
"""
from __future__ import annotations

import time

import torch

from invdiff import samplers
from invdiff.benchmarks.aps_tasks import TASKS, digits_signals, kde_prior, make_task
from invdiff.diffusion.discrete import Codebook, empirical_prior, intensity_quantizer, random_mixture
from invdiff.metrics import psnr
from invdiff.operators import Matrix
from invdiff.samplers.discrete_exact import exact_posterior, tv_distance

__all__ = ["run", "enumeration_rows", "oracle_rows", "task_rows", "discrete_sampler"]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def discrete_sampler(name: str, prior, nfe: int, particles: int = 4, candidates: int = 4, **kwargs):
    """The sampler ``name`` set to spend ``nfe`` network calls per draw (``kwargs``: its other settings)."""
    if name == "sgdd":
        return samplers.make("sgdd", prior, iterations=nfe, **kwargs)
    if name == "svdd":
        return samplers.make("svdd", prior, steps=max(1, nfe // candidates), candidates=candidates)
    if name == "masked-smc":
        return samplers.make("masked-smc", prior, steps=max(1, nfe // particles))
    return samplers.make(name, prior, steps=nfe, **kwargs)


def _draw(sampler, name, y, op, n, gen, particles=4):
    """``n`` equally weighted draws ``(n, B, ...)`` and tokens; SMC: one particle by weight per run."""
    if name != "masked-smc":
        out = sampler.sample(y, op, n_samples=n, generator=gen)
        return out.samples, out.trace["tokens"]
    xs, ts = [], []
    for _ in range(n):
        out = sampler.sample(y, op, n_samples=particles, generator=gen)
        k = torch.multinomial(torch.softmax(out.log_weights.double().T, -1), 1, generator=gen).squeeze(1)
        b = torch.arange(y.shape[0])
        xs.append(out.samples[k, b])
        ts.append(out.trace["tokens"][k, b])
    return torch.stack(xs), torch.stack(ts)


def enumeration_rows(quick: bool = False, names: tuple[str, ...] = ("masked-unguided", "svdd", "masked-smc", "aps", "sgdd")) -> list[dict]:
    rows = []
    n = 256 if quick else 1024
    for seed in (0,) if quick else (0, 1, 2):
        g = _g(seed)
        cb = Codebook(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), (8,))
        prior = random_mixture(4, 8, 3, generator=g, codebook=cb)
        op = Matrix(2 * torch.randn(3, 8, generator=g, dtype=torch.float64) / 8 ** 0.5, sigma=0.3)
        y = op.A(cb.decode(prior.sample(1, g), dtype=torch.float64)) + 0.3 * torch.randn(1, 3, generator=g, dtype=torch.float64)
        support, probs = exact_posterior(prior, y, op)
        floor = tv_distance(support[torch.multinomial(probs, n, True, generator=_g(99))], support, probs, 3)
        rows.append({"problem": seed, "sampler": "exact draws (floor)", "nfe": 0, "tv": floor, "seconds": 0.0})
        for nfe in (8, 16):
            for name in names:
                t0 = time.perf_counter()
                if name == "masked-smc":
                    s = samplers.make(name, prior, steps=nfe)
                    toks, ws = [], []
                    for _ in range(n // 64):
                        out = s.sample(y, op, n_samples=64, generator=g)
                        toks.append(out.trace["tokens"][:, 0])
                        ws.append(torch.softmax(out.log_weights[:, 0].double(), 0))
                    tv = tv_distance(torch.cat(toks), support, probs, 3, torch.cat(ws))
                    label = "masked-smc (64 particles)"
                else:
                    s = discrete_sampler(name, prior, nfe)
                    out = s.sample(y, op, n_samples=n, generator=g)
                    tv, label = tv_distance(out.trace["tokens"][:, 0], support, probs, 3), name
                    nfe_row = out.nfe
                rows.append({"problem": seed, "sampler": label, "nfe": nfe if name == "masked-smc" else nfe_row,
                             "tv": tv, "seconds": time.perf_counter() - t0})
    return rows


def oracle_rows(quick: bool = False) -> list[dict]:
    tokens, images = digits_signals("train")
    cb = intensity_quantizer(17, (1, 8, 8))
    prior = empirical_prior(tokens, 17, eps=1e-6, codebook=cb)
    rows, n = [], 50 if quick else 100
    for task in TASKS[:2] if quick else TASKS:
        op = make_task(task)
        for j in (3,):
            x = images[j:j + 1]
            y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=_g(j))
            support, probs = exact_posterior(prior, y, op, support=tokens)
            for name in ("masked-unguided", "svdd", "aps"):
                t0 = time.perf_counter()
                out = discrete_sampler(name, prior, 32).sample(y, op, n_samples=n, generator=_g(1))
                toks = out.trace["tokens"][:, 0]
                rows.append({"task": task, "digit": j, "sampler": name, "nfe": out.nfe,
                             "tv": tv_distance(toks, support, probs, 17),
                             "in_set": float((toks.unsqueeze(1) == tokens.unsqueeze(0)).all(-1).any(1).double().mean()),
                             "posterior_max": float(probs.max()), "seconds": time.perf_counter() - t0})
    return rows


def _score(x_hat, x, op, y) -> tuple[float, float, float]:
    p = psnr(x_hat.clamp(0, 1), x)
    err = ((op.A(x_hat) - y) ** 2).flatten(1).mean(1).sqrt()
    return float(p.mean()), float(p.std() / len(p) ** 0.5), float(err.mean())


def _dps_zeta(prior, op, nfe, x_val, grid=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0), pool=None) -> float:
    """DPS step size with the best validation PSNR (grid scaled by 32 / nfe); ``op`` is the
    task's operator (``pool``: the :class:`Pooled` wrapper DPS samples through, scored on its pooled output)."""
    y = op.A(x_val) + 0.05 * torch.randn(op.A(x_val).shape, generator=_g(5))
    best = None
    for z in grid:
        zeta = z * 32 / nfe
        try:
            out = samplers.make("dps", prior, steps=nfe, zeta=zeta, progress=False).sample(y, pool or op, generator=_g(6))
            score = _score(out.samples[0] if pool is None else pool.pool(out.samples[0]), x_val, op, y)[0]
        except FloatingPointError:
            continue
        if best is None or score > best[0]:
            best = (score, zeta)
    return best[1]


SAMPLERS = ("masked-unguided", "svdd", "masked-smc", "aps", "dps")


def task_rows(quick: bool = False, prior_name: str = "digits-mdlm", tasks: tuple[str, ...] = TASKS,
              names: tuple[str, ...] = SAMPLERS, nfes: tuple[int, ...] = (16, 32, 100)) -> list[dict]:
    """The task table; NFE 100 is run for DPS only (a reference above the discrete samplers' budget)."""
    from invdiff.diffusion.discrete.training import load_discrete_prior

    prior = load_discrete_prior(prior_name)
    kde = kde_prior()
    _, x_all = digits_signals("test")
    x_val, x = x_all[:40], x_all[40:70] if quick else x_all[40:100]
    rows = []
    for task in tasks:
        op = make_task(task)
        y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=_g(0))
        for nfe in nfes:
            for name in names:
                if nfe > 32 and name != "dps":
                    continue
                t0 = time.perf_counter()
                if name == "dps":
                    zeta = _dps_zeta(kde, op, nfe, x_val)
                    t0 = time.perf_counter()
                    out = samplers.make("dps", kde, steps=nfe, zeta=zeta, progress=False).sample(y, op, generator=_g(1))
                    xs, label, used = out.samples, f"dps (kde prior, zeta={zeta:.3g})", out.nfe
                else:
                    s = discrete_sampler(name, prior, nfe)
                    xs, _ = _draw(s, name, y, op, 1, _g(1))
                    label = name + (" (4 particles)" if name == "masked-smc" else "")
                    used = nfe + 1 if name == "svdd" else nfe
                p, se, err = _score(xs[0], x, op, y)
                rows.append({"task": task, "sampler": label, "nfe": used, "psnr": p, "psnr_se": se,
                             "meas_rmse": err, "seconds": time.perf_counter() - t0})
    return rows


PHANTOM_SAMPLERS = ("masked-unguided", "svdd", "masked-smc", "sgdd", "aps", "aps-phantom", "dps")
#: APS re-tuned on phantoms (``aps-phantom`` rows): measured on 4 validation phantoms at NFE 16,
#: the digits settings gave 15.0 / 16.6 dB (inpainting / deblur); KL weight 0.01 and ranking noise
#: 2 gave 17.1 / 20.0 dB (greedy ranking, noise 0: 12.9 / 14.0 dB; 50 inner steps: 15.1 / 15.2 dB)
APS_PHANTOM = {"kl_weight": 0.01, "confidence_noise": 2.0}
#: SGDD's likelihood step on 1,024 tokens: 400 single-position MH moves per round. Measured on the
#: 8 validation phantoms (deblur, NFE 16, 100 moves): one position per move accepted 19% and gave
#: 13.2 dB; 16 positions accepted 0.2% (13.1 dB), 64 positions none (12.9 dB).
SGDD_PHANTOM = {"mh_steps": 400, "block": 1}


def phantom_task_rows(quick: bool = False, prior_name: str = "phantom32-mdlm", tasks: tuple[str, ...] = TASKS,
                      names: tuple[str, ...] = PHANTOM_SAMPLERS, nfes: tuple[int, ...] = (16, 32),
                      n_images: int | None = None) -> list[dict]:
    """The phantom task table: 32x32 held-out CT phantoms (images 8.. of the pool; 0-7 validate
    DPS's step size), one draw per measurement, noise 0.05. Discrete samplers use the shipped
    ``phantom32-mdlm`` (16 levels); DPS the shipped ``ct-phantom-64`` through :class:`Pooled`
    (its step size chosen at NFE 32 on the 8 validation phantoms from 4, 8, 16, scaled by 32 / NFE).
    A ``quantised truth`` row gives the PSNR ceiling of 16 levels."""
    from invdiff.benchmarks.aps_tasks import Pooled, phantom_signals
    from invdiff.diffusion.discrete.training import load_discrete_prior
    from invdiff.diffusion.zoo import load_prior

    prior = load_discrete_prior(prior_name)
    n = n_images or (6 if quick else 16)
    _, x_val = phantom_signals(8, 0)
    x_tok, x = phantom_signals(n, 8)
    x_q = prior.codebook.decode(x_tok)
    dps_prior = load_prior("ct-phantom-64") if "dps" in names else None
    rows = []
    for task in tasks:
        op = make_task(task, size=32)
        y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, generator=_g(0))
        p, se, err = _score(x_q, x, op, y)
        rows.append({"task": task, "sampler": "quantised truth (16 levels)", "nfe": 0, "psnr": p, "psnr_se": se,
                     "meas_rmse": err, "seconds": 0.0})
        zeta32 = None
        for nfe in nfes:
            for name in names:
                t0 = time.perf_counter()
                if name == "dps":
                    pooled = Pooled(op)
                    if zeta32 is None:
                        zeta32 = _dps_zeta(dps_prior, op, 32, x_val, grid=(4.0, 8.0, 16.0), pool=pooled)
                        t0 = time.perf_counter()
                    zeta = zeta32 * 32 / nfe
                    out = samplers.make("dps", dps_prior, steps=nfe, zeta=zeta, progress=False).sample(y, pooled, generator=_g(1))
                    xs, label, used = pooled.pool(out.samples[0]).unsqueeze(0), f"dps (ct-phantom-64, zeta={zeta:.3g})", out.nfe
                else:
                    kw = {"sgdd": SGDD_PHANTOM, "aps-phantom": APS_PHANTOM}.get(name, {})
                    s = discrete_sampler(name.replace("-phantom", ""), prior, nfe, **kw)
                    xs, _ = _draw(s, name, y, op, 1, _g(1))
                    label = name + (" (4 particles)" if name == "masked-smc" else "")
                    label = "aps (kl 0.01, noise 2)" if name == "aps-phantom" else label
                    used = nfe + 1 if name == "svdd" else nfe
                p, se, err = _score(xs[0], x, op, y)
                rows.append({"task": task, "sampler": label, "nfe": used, "psnr": p, "psnr_se": se,
                             "meas_rmse": err, "seconds": time.perf_counter() - t0})
    return rows


TABLES = {"aps_enumeration": enumeration_rows, "aps_oracle": oracle_rows, "aps_tasks": task_rows,
          "aps_phantoms": phantom_task_rows}


def run(out_dir: str = "results/bench", quick: bool = False, device: str = "cpu",
        tables: tuple[str, ...] = tuple(TABLES)) -> dict[str, list[dict]]:
    """The tables named in ``tables`` (default all three; CPU: ``device`` is accepted for the CLI
    and ignored, the priors are tiny). Seeded: the same command gives the same rows."""
    torch.set_num_threads(1)
    return {name: TABLES[name](quick) for name in tables}
