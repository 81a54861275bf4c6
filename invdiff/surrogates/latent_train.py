r"""Training of the latent diffusion surrogate and of its FNO baseline on periodic Burgers, with a card.

Two stages (:class:`~invdiff.surrogates.latent.LatentSurrogate`), each Adam with a linear warm-up,
gradient clipping and an exponential moving average (EMA) of the weights, stopped at ``steps``
or after ``time_limit`` seconds of process CPU time (the loop :func:`invdiff.surrogates.train.fit`):

1. the autoencoder on :math:`\|\mathcal D(E(u)) - u\|^2 / s_u^2` (``"autoencoder"`` section);
2. with the EMA autoencoder frozen, the latent denoiser on the EDM loss (Karras et al. 2022)
   of the standardised latents :math:`\tilde z_0` of the training trajectories, conditioned on
   their :math:`u_0` and :math:`\nu` (``"diffusion"`` section):

   .. math::
       \mathbb E\, \lambda(\sigma)\, \| D(\tilde z_0 + \sigma n, \sigma \mid u_0, \nu) - \tilde z_0 \|^2,
       \quad \ln\sigma \sim \mathcal N(-1.2, 1.2^2).

The FNO baseline (``"model": "fno"``) is :func:`invdiff.surrogates.train.train` on the same
data, with :math:`\nu` given as its forcing channel: the constant field
:func:`~invdiff.surrogates.data_periodic.nu_channel`.

Command line (one thread, as the shipped model)::

    OMP_NUM_THREADS=1 python -m invdiff.surrogates.latent_train --config configs/burgers-latent-32x64.json \
        --out runs/surrogates/burgers-latent-32x64.safetensors --data-cache runs/surrogates/periodic-train.pt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from invdiff.diffusion.edm import loss_weight, sample_sigma
from invdiff.surrogates.data_periodic import nu_channel, periodic_burgers_trajectories
from invdiff.surrogates.latent import LatentSurrogate
from invdiff.surrogates.train import fit, load_model, load_or_make_data, save_model
from invdiff.utils.random import randn_like

__all__ = ["train_latent", "load_latent", "load_or_make_periodic_data", "card_of", "main"]

_STAGE_DEFAULTS = dict(warmup=100, grad_clip=1.0, ema_decay=0.995)  # a stage section's settings where it omits them


def train_latent(model: LatentSurrogate, data: dict, autoencoder: dict, diffusion: dict, seed: int = 0, log=print,
                 checkpoint=None) -> tuple[LatentSurrogate, dict]:
    """Both stages on ``data`` (``u`` ``(N, nt, nx)``, ``u0``, ``nu``); return (model with EMA weights, stats)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    u, u0, nu = data["u"], data["u0"], data["nu"]
    n = u.shape[0]
    model.ae.u_scale.fill_(float(u.std()))
    s2 = float(u.std()) ** 2

    def ae_loss(idx):
        return ((model.ae(u[idx]) - u[idx]) ** 2).mean() / s2

    ae_cfg = {**_STAGE_DEFAULTS, **autoencoder}
    ema_ae, ae_stats = fit(model.ae, ae_loss, n, ae_cfg.pop("steps"), gen=gen, log=log, name="autoencoder", **ae_cfg)
    model.ae.load_state_dict(ema_ae.state_dict())
    model.ae.requires_grad_(False).eval()
    with torch.no_grad():
        z = torch.cat([model.ae.encode(u[i:i + 256]) for i in range(0, n, 256)])
        rec = torch.cat([model.ae.decode(z[i:i + 256]) for i in range(0, n, 256)])
    ae_stats["train_rel_l2"] = float(((rec - u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)).mean())
    log(f"autoencoder: training-set relative L2 {ae_stats['train_rel_l2']:.4f}")
    model.fit_latent_scaling(z)
    with torch.no_grad():
        Z = (z - model.z_mean.reshape(1, -1, 1, 1)) / model.z_std.reshape(1, -1, 1, 1)

    def ldm_loss(idx):
        x0 = Z[idx]
        sigma = sample_sigma(len(idx), gen, dtype=x0.dtype)
        s = sigma.reshape(-1, 1, 1, 1)
        D = model(x0 + s * randn_like(x0, gen), sigma, u0=u0[idx], nu=nu[idx])
        return (loss_weight(s, model.sigma_data) * (D - x0) ** 2).mean()

    dm_cfg = {**_STAGE_DEFAULTS, "log_every": 200, **diffusion}
    trainable = [*model.net.parameters(), *model.params.parameters()]
    ema, dm_stats = fit(model, ldm_loss, n, dm_cfg.pop("steps"), params=trainable, gen=gen, log=log, name="latent diffusion",
                        checkpoint=None if checkpoint is None else lambda e, _: checkpoint(e), **dm_cfg)
    return ema, dict(autoencoder=ae_stats, diffusion=dm_stats, parameters=sum(p.numel() for p in model.parameters()))


def load_latent(path: str | Path, dtype: torch.dtype = torch.float32) -> LatentSurrogate:
    """A :class:`LatentSurrogate` saved by this script (eval mode, ``.card`` attached)."""
    model = load_model(path, dtype)
    if model.card.get("model") != "latent":
        raise ValueError(f"{path}: holds model {model.card.get('model')!r}, expected 'latent'")
    return model


def load_or_make_periodic_data(d: dict, cache: str | None = None) -> dict:
    """The periodic training trajectories of a config's ``data`` section, from ``cache`` if it holds the same spec."""
    return load_or_make_data(d, cache, make=periodic_burgers_trajectories)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="output .safetensors path (card beside it)")
    ap.add_argument("--data-cache", default=None, help="a .pt file holding the training data (made if missing)")
    ap.add_argument("--ae-steps", type=int, default=None, help="autoencoder steps, no CPU-time limit (to reproduce a card)")
    ap.add_argument("--diffusion-steps", type=int, default=None, help="latent diffusion steps, no CPU-time limit (to reproduce a card)")
    args = ap.parse_args(argv)
    cfg = json.loads(Path(args.config).read_text())
    for section, steps in (("autoencoder", args.ae_steps), ("diffusion", args.diffusion_steps)):
        if steps is not None:
            cfg[section] = dict(cfg[section], steps=steps, time_limit=None)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    t0 = time.time()
    data = load_or_make_periodic_data(cfg["data"], args.data_cache)
    print(f"data: {cfg['data']['n_train']} trajectories in {time.time() - t0:.0f} s", flush=True)
    command = "OMP_NUM_THREADS=1 python -m invdiff.surrogates.latent_train " + " ".join(sys.argv[1:] if argv is None else argv)
    base = dict(cfg, command=command, data_card="datasets/pde_burgers.md", weights_dtype="float16")
    if cfg["model"] == "fno":
        from invdiff.surrogates.train import build_model, train

        lo_hi = cfg["data"].get("log10_nu", [-2.5, -1.5])
        d = dict(u=data["u"], u0=data["u0"], f=nu_channel(data["nu"], cfg["data"]["nt"], cfg["data"]["nx"], lo_hi))
        tr = dict(cfg["training"])
        ema, stats = train(build_model(cfg), d, cfg["steps"], time_limit=tr.pop("time_limit", None), seed=cfg["seed"],
                           log=lambda s: print(s, flush=True), **tr)
        save_model(ema, dict(base, **stats), args.out)
        print(json.dumps(stats), flush=True)
        return
    if cfg["model"] != "latent":
        raise ValueError(f"model: expected 'latent' or 'fno', got {cfg['model']!r}")
    model = LatentSurrogate(**cfg["network"])
    stage = {}

    def checkpoint(ema):
        save_model(ema, dict(base, **stage, partial=True), args.out)

    ema, stats = train_latent(model, data, cfg["autoencoder"], cfg["diffusion"], seed=cfg["seed"],
                              log=lambda s: print(s, flush=True), checkpoint=checkpoint)
    print(json.dumps(stats), flush=True)
    save_model(ema, card_of(cfg, stats, command, wall_seconds=round(time.time() - t0, 1)), args.out)


def card_of(cfg: dict, stats: dict, command: str, **extra) -> dict:
    """The card of a latent run: the config, each stage's settings (``max_steps``) merged with what it did
    (``steps`` taken, CPU and wall seconds, final loss), the total CPU seconds and the command."""
    card = dict(cfg, command=command, data_card="datasets/pde_burgers.md", weights_dtype="float16",
                parameters=stats["parameters"], **extra)
    for section in ("autoencoder", "diffusion"):
        card[section] = dict(cfg[section], max_steps=cfg[section]["steps"], **stats[section])
    card["cpu_seconds"] = round(stats["autoencoder"]["cpu_seconds"] + stats["diffusion"]["cpu_seconds"], 1)
    return card


if __name__ == "__main__":
    main()
