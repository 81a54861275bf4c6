r"""Training of the Burgers surrogates (WDNO, physical-domain diffusion, FNO), with a card.

Diffusion models minimise the EDM loss (Karras et al. 2022) on the scaled state, with the
known channels overwritten by the clean condition (see :mod:`invdiff.surrogates.wdno`) and the
:math:`u_0` condition dropped with probability ``p_uncond`` per sample:

.. math::
    \mathbb E\, \lambda(\sigma)\, \| D(x_0 + \sigma n, \sigma \mid m_{u_0} u_0, f) - x_0 \|^2,
    \quad \ln\sigma \sim \mathcal N(-1.2, 1.2^2).

The super-resolution stage (:class:`~invdiff.surrogates.wdno_sr.WaveletSR`, ``"model": "wdno-sr"``)
is trained the same way on fine trajectories, conditioned on their nested coarse version.
The FNO baseline minimises the mean squared error of the scaled trajectory. Both use Adam with
a linear warm-up, gradient clipping and an exponential moving average of the weights (the EMA
weights are saved). A run stops at ``steps`` or after ``time_limit`` seconds of process CPU time, whichever is
first (CPU time, not wall-clock, so that runs sharing a busy machine get equal budgets; the card
records the steps actually taken and both times).

Command line (one thread, as the shipped model)::

    OMP_NUM_THREADS=1 python -m invdiff.surrogates.train --config configs/burgers-wdno-32x64.json --out runs/wdno
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

from invdiff.diffusion.edm import loss_weight, sample_sigma
from invdiff.surrogates.data import burgers_trajectories
from invdiff.surrogates.fno import FNO2d
from invdiff.surrogates.wdno import WDNO
from invdiff.surrogates.wdno_sr import WaveletSR, coarsen
from invdiff.utils.io import atomic_path
from invdiff.utils.random import rand, randn_like

__all__ = ["build_model", "fit", "train", "save_model", "load_model", "main"]


def build_model(card: dict) -> torch.nn.Module:
    """The (untrained) model of a config/card: ``{"model": "wdno"|"wdno-sr"|"latent"|"fno", "network": {...}}``."""
    kind, net = card.get("model"), dict(card.get("network", {}))
    if kind == "wdno":
        return WDNO(**net)
    if kind == "fno":
        return FNO2d(**net)
    if kind == "wdno-sr":
        return WaveletSR(**net)
    if kind == "latent":
        from invdiff.surrogates.latent import LatentSurrogate

        return LatentSurrogate(**net)
    raise ValueError(f"model: expected 'wdno', 'wdno-sr', 'latent' or 'fno', got {kind!r}")


def _diffusion_loss(model: WDNO, x0, known, mask, gen):
    sigma = sample_sigma(x0.shape[0], gen, device=x0.device, dtype=x0.dtype)
    s = sigma.reshape(-1, 1, 1, 1)
    D = model(x0 + s * randn_like(x0, gen), sigma, known=(known, mask))
    return (loss_weight(s, model.sigma_data) * (D - x0) ** 2).mean()


def fit(model: torch.nn.Module, loss_fn, n: int, steps: int, *, batch: int, lr: float, warmup: int, ema_decay: float,
        grad_clip: float = 1.0, params=None, time_limit: float | None = None, gen=None, log=print, log_every: int = 100,
        checkpoint=None, name: str = "") -> tuple[torch.nn.Module, dict]:
    r"""The training loop of every surrogate: minimise ``loss_fn(idx)`` over ``params`` (default: all of ``model``'s);
    return (EMA copy of ``model``, stats).

    Each step draws the batch ``idx = randint(0, n, (batch,), generator=gen)`` and then calls ``loss_fn(idx)``, which
    draws its own noise (from the same generator) if it needs any. Adam at learning rate
    :math:`\mathrm{lr} \cdot \min(1, \mathrm{step}/\mathrm{warmup})`, gradients clipped to norm ``grad_clip``, and
    the EMA weights :math:`\bar\theta \leftarrow \bar\theta + (1 - \mathrm{ema\_decay})(\theta - \bar\theta)`
    of ``params`` (the EMA copy's buffers follow the model's). It stops after ``steps`` steps or once the process CPU time
    exceeds ``time_limit`` seconds. Every ``log_every`` steps (and at the last) it logs the mean loss of the last
    ``log_every`` steps and calls ``checkpoint(ema, stats)`` if given. The stats: ``steps`` taken, ``final_loss`` (mean
    of the last ``final_loss_window`` <= 200 steps), ``wall_seconds``, ``cpu_seconds`` and the ``parameters`` trained.

    >>> net = torch.nn.Linear(1, 1)
    >>> x = torch.linspace(-1, 1, 8)[:, None]
    >>> ema, stats = fit(net, lambda idx: ((net(x[idx]) - 2 * x[idx]) ** 2).mean(), 8, 5, batch=4, lr=0.1, warmup=1,
    ...                  ema_decay=0.9, gen=torch.Generator().manual_seed(0), log=lambda s: None)
    >>> stats["steps"], stats["parameters"]
    (5, 2)
    """
    params = list(model.parameters() if params is None else params)
    ema = copy.deepcopy(model).eval()
    trained = {id(p) for p in params}
    pairs = [(pe, pm) for pe, pm in zip(ema.parameters(), model.parameters()) if id(pm) in trained]
    opt = torch.optim.Adam(params, lr=lr)
    head = f"{name} " if name else ""
    losses, t0, c0, step = [], time.time(), time.process_time(), 0
    for step in range(1, steps + 1):
        idx = torch.randint(0, n, (batch,), generator=gen)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, step / max(warmup, 1))
        loss = loss_fn(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        with torch.no_grad():
            for pe, pm in pairs:
                pe.lerp_(pm, 1 - ema_decay)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        losses.append(float(loss.detach()))
        done = time_limit is not None and time.process_time() - c0 > time_limit
        if step % log_every == 0 or done or step == steps:
            log(f"{head}step {step} loss {sum(losses[-log_every:]) / len(losses[-log_every:]):.4f} "
                f"({time.time() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU)")
            if checkpoint is not None:
                checkpoint(ema, _stats(losses, step, t0, c0, params))
        if done:
            log(f"{name + ': ' if name else ''}CPU time limit {time_limit:.0f} s reached at step {step}")
            break
    return ema, _stats(losses, step, t0, c0, params)


def _stats(losses, step, t0, c0, params) -> dict:
    window = losses[-min(200, len(losses)):]
    return dict(steps=step, final_loss=sum(window) / len(window), final_loss_window=len(window),
                wall_seconds=round(time.time() - t0, 1), cpu_seconds=round(time.process_time() - c0, 1),
                parameters=sum(p.numel() for p in params))


def train(model, data: dict, steps: int, batch: int = 32, lr: float = 1e-3, warmup: int = 200, grad_clip: float = 1.0,
          ema_decay: float = 0.999, p_uncond: float = 0.2, seed: int = 0, time_limit: float | None = None,
          log=print, log_every: int = 100, checkpoint=None) -> tuple[torch.nn.Module, dict]:
    """Train ``model`` (a :class:`WDNO`, :class:`WaveletSR` or :class:`FNO2d`) on ``data`` (``u``, ``u0``, ``f``); return (EMA model, stats).

    The loop is :func:`fit`; ``checkpoint(ema, stats)``, if given, is called every ``log_every`` steps (e.g. to save
    the EMA weights)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    u, u0, f = data["u"], data["u0"], data["f"]
    n = u.shape[0]
    if isinstance(model, WDNO):
        model.fit_scaling(u, u0, f)
        with torch.no_grad():
            X = model.encode(u)
            K, M = model.condition(n, u0, f, dtype=u.dtype)
        per = K.shape[1] // 2

        def loss_fn(idx):
            keep = (rand((len(idx),), generator=gen) >= p_uncond).to(u.dtype).reshape(-1, 1, 1, 1)
            k, m = K[idx].clone(), M[idx].clone()
            k[:, :per] *= keep
            m[:, :1] *= keep
            return _diffusion_loss(model, X[idx], k, m, gen)
    elif isinstance(model, WaveletSR):
        model.fit_scaling(u, f)
        with torch.no_grad():
            X = model.encode(u)
            K = model.condition(n, coarsen(u), coarsen(f), dtype=u.dtype)

        def loss_fn(idx):
            return _diffusion_loss(model, X[idx], K[idx], None, gen)
    else:
        model.u_scale.fill_(float(u.std()))
        model.f_scale.fill_(float(f.std()))

        def loss_fn(idx):
            return ((model(u0[idx], f[idx]) - u[idx]) ** 2).mean() / float(model.u_scale) ** 2
    return fit(model, loss_fn, n, steps, batch=batch, lr=lr, warmup=warmup, grad_clip=grad_clip, ema_decay=ema_decay,
               time_limit=time_limit, gen=gen, log=log, log_every=log_every, checkpoint=checkpoint)


def save_model(model: torch.nn.Module, card: dict, path: str | Path, half: bool = True) -> Path:
    """Weights as safetensors (parameters float16 if ``half``, buffers float32) and the card as JSON beside them."""
    from safetensors.torch import save_file

    path = Path(path)
    params = {k for k, _ in model.named_parameters()}
    state = {k: (v.half() if half and k in params else v.float()).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"card": json.dumps(card)})
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    for p in (path, path.with_suffix(".json")):
        p.chmod(0o644)
    return path


def load_model(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A model saved by :func:`save_model` (eval mode, ``.card`` attached)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ValueError(f"no surrogate weights at {path}")
    with safe_open(str(path), "pt") as fh:
        card = json.loads(fh.metadata()["card"])
    model = build_model(card)
    model.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    model.card = card
    return model.to(dtype).eval().requires_grad_(False)


def load_or_make_data(d: dict, cache: str | None = None, make=burgers_trajectories) -> dict:
    """The training trajectories of a config's ``data`` section (``make(n, seed=, nx=, nt=)``, by default the
    forced Dirichlet set), from ``cache`` if it holds the same spec."""
    spec = {k: d[k] for k in ("n_train", "seed", "nx", "nt")}
    if cache is not None and Path(cache).exists():
        blob = torch.load(cache, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
        if blob["spec"] == spec:
            return blob["data"]
    data = make(d["n_train"], seed=d["seed"], nx=d["nx"], nt=d["nt"])
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            torch.save(dict(spec=spec, data=data), tmp)
    return data


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="output .safetensors path (card beside it)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=None, help="CPU seconds")
    ap.add_argument("--data-cache", default=None, help="a .pt file holding the training data (made if missing)")
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    steps = args.steps or cfg["steps"]
    torch.set_num_threads(int(cfg.get("threads", 1)))
    d = cfg["data"]
    t0 = time.time()
    data = load_or_make_data(d, args.data_cache)
    print(f"data: {d['n_train']} trajectories in {time.time() - t0:.0f} s", flush=True)
    model = build_model(cfg)
    tr = cfg["training"]
    command = "OMP_NUM_THREADS=1 python -m invdiff.surrogates.train " + " ".join(sys.argv[1:] if argv is None else argv)

    def checkpoint(ema, stats):
        save_model(ema, dict(cfg, **stats, command=command, data_card="datasets/pde_burgers.md", weights_dtype="float16"), args.out)

    ema, stats = train(model, data, steps, time_limit=args.time_limit or tr.get("time_limit"), seed=cfg["seed"],
                       log=lambda s: print(s, flush=True), checkpoint=checkpoint, **{k: v for k, v in tr.items() if k != "time_limit"})
    checkpoint(ema, stats)
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
